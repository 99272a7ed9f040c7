"""The console progress bar, redrawn a few times a second rather than after every batch."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class ThrottledProgressBar(RichProgressBar):
    """Lightning's rich progress bar, redrawn after a training or validation batch only when ``min_interval_s``
    has passed since the last redraw, and at the last batch: a redraw costs about a millisecond of CPU, as much
    as a small network's whole training step (``make bench``). Epochs count from 1 (``Epoch 3/10``), as in
    metrics.csv and the epoch lines; Lightning's own bar counts from 0 (``Epoch 2/9``)."""

    def __init__(self, min_interval_s: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_interval_s = min_interval_s
        self._drawn_at = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the epoch label set through the bar's public rich task (Lightning's own label comes from a private method)
        super().on_train_epoch_start(trainer, pl_module)
        if self.progress is None or self.train_progress_bar_id is None:  # disabled (DDP ranks other than 0)
            return
        description = f"Epoch {trainer.current_epoch + 1}"
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            description += f"/{trainer.max_epochs}"
        # as wide as the validation bar's label, as Lightning pads it, so that the bar does not jump
        description = f"{description:{len(self.validation_description)}}"
        style = self.theme.description
        self.progress.update(
            self.train_progress_bar_id, description=f"[{style}]{description}" if style else description
        )
        self.refresh()

    def _due(self, batch_idx: int, total: int | float) -> bool:
        now = time.perf_counter()
        if batch_idx + 1 < total and now - self._drawn_at < self.min_interval_s:
            return False
        self._drawn_at = now
        return True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not self.is_disabled and self._due(batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        # a disabled bar (DDP ranks other than 0) has no current dataloader index to read
        if not self.is_disabled and self._due(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
