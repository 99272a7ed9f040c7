"""Random numbers that depend on the epoch, not on how many epochs this process has run."""

from __future__ import annotations

import os

import lightning as L
from lightning.fabric.utilities.seed import seed_everything


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` of a run seeded with ``seed`` (distinct for nearby seeds and epochs)."""
    return (seed * 1_000_003 + epoch) % 2**32


class EpochSeed(L.Callback):
    """Reseeds Python, NumPy and torch at the start of every training epoch from ``(seed, epoch)``.

    So dropout masks, denoising noise and augmentation of epoch k are the same whether the run went straight
    through or was resumed from the checkpoint of epoch k-1. ``seed=None`` (an unseeded run) does nothing.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.seed is not None:
            seed_everything(epoch_seed(self.seed, trainer.current_epoch), workers=True, verbose=False)
            os.environ["PL_GLOBAL_SEED"] = str(self.seed)  # still the run's seed, for loaders made later
