"""How many CPU threads torch's operations use during a run."""

from __future__ import annotations

import lightning as L
import torch

from apa_lightning.errors import ApaError


class TorchThreads(L.Callback):
    """Sets torch's intra-op CPU threads to ``num_threads`` from setup to teardown, then restores the previous
    number. Tiny networks (the font's MLP: matrices of a few hundred numbers) run fastest on one thread: several
    threads only synchronise, and slow to a crawl on a busy machine."""

    def __init__(self, num_threads: int = 1) -> None:
        if num_threads < 1:
            raise ApaError(f"callbacks.torch_threads.num_threads must be at least 1, got {num_threads}.")
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
