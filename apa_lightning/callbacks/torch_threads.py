"""How many CPU threads torch's operations use during a run: ``cpu_threads`` in the config, else the number a
resumed run's checkpoint recorded, else torch's default (one per core). Never the load at start: a resumed run must
add up its numbers in the same order as an unbroken one, to the last digit."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from apa_lightning.errors import ApaError

CHECKPOINT_KEY = "cpu_threads"  # in every checkpoint of a training run


def cpu_threads(cfg: DictConfig, ckpt_path: str | None = None) -> int:
    """The number of torch CPU threads for a run of ``cfg`` continuing from ``ckpt_path`` (None: a new run)."""
    configured = cfg.get("cpu_threads")  # checked by config_checks.RULES
    if configured is not None:
        return int(configured)
    if ckpt_path:
        from apa_lightning.runs.checkpoints import read_checkpoint

        recorded = read_checkpoint(ckpt_path).get(CHECKPOINT_KEY)
        if recorded is not None:
            return int(recorded)
    return torch.get_num_threads()


class TorchThreads(L.Callback):
    """Sets torch's intra-op CPU threads to ``num_threads`` from setup to teardown, then restores the previous
    number, and records it in every checkpoint (``cpu_threads``) for a resume. Tiny networks (the font's MLP:
    matrices of a few hundred numbers) run fastest on one thread: several threads only synchronise. Every training
    run has one (``run.build_run``); the number comes from ``cpu_threads``."""

    def __init__(self, num_threads: int) -> None:
        if num_threads < 1:
            raise ApaError(f"cpu_threads must be at least 1, got {num_threads}.")
        self.num_threads = num_threads
        self._previous: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is None:
            self._previous = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            torch.set_num_threads(self._previous)
            self._previous = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.num_threads
