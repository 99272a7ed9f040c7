"""Random numbers that depend on the epoch, not on how many epochs this process has run."""

from __future__ import annotations

import os

import lightning as L
import numpy as np
from lightning.fabric.utilities.seed import seed_everything

TEST_EPOCH = -1  # the test's draws come from a seed no training epoch uses


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` of a run seeded with ``seed`` (distinct for nearby seeds and epochs)."""
    return (seed * 1_000_003 + epoch) % 2**32


class EpochSeed(L.Callback):
    """Reseeds Python, NumPy and torch at the start of every training epoch from ``(seed, epoch)`` and of every
    test from ``seed`` alone; DDP ranks other than 0 mix their rank into it.

    So dropout masks, denoising noise and augmentation of epoch k are the same whether the run went straight
    through or was resumed from the checkpoint of epoch k-1, and a test's random draws (a denoising autoencoder's
    test noise, a VAE's sampled codes) are the same after fit as in ``task=eval`` of its checkpoint. Each rank
    augments its images with its own draws. ``seed=None`` (an unseeded run) does nothing.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reseed(trainer, trainer.current_epoch)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reseed(trainer, TEST_EPOCH)

    def _reseed(self, trainer: L.Trainer, epoch: int) -> None:
        if self.seed is not None:
            seed = epoch_seed(self.seed, epoch)
            if trainer.global_rank:  # mixed, not added: seed + 1 is the next epoch's seed of rank 0
                seed = int(np.random.SeedSequence([seed, trainer.global_rank]).generate_state(1)[0])
            seed_everything(seed, workers=True, verbose=False)
            os.environ["PL_GLOBAL_SEED"] = str(self.seed)  # still the run's seed, for loaders made later
