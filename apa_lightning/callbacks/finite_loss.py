"""Stop a run whose training has diverged."""

from __future__ import annotations

import lightning as L
import torch

from apa_lightning.errors import ApaError


class FiniteLossCheck(L.Callback):
    """Fails the run with a clear error when an epoch's ``monitor`` (the training loss) is NaN or infinite,
    instead of training on for the remaining epochs. Checked once per epoch: no per-step device sync."""

    def __init__(self, monitor: str = "train/loss") -> None:
        self.monitor = monitor

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:  # a misspelt name would otherwise switch the check off
            logged = ", ".join(sorted(k for k in trainer.callback_metrics if k.startswith("train"))) or "none"
            raise ApaError(
                f"FiniteLossCheck watches monitor={self.monitor}, which the model does not log (its training "
                f"metrics: {logged}). Set the finite-loss callback's monitor to the training loss's name."
            )
        if not torch.isfinite(value).all():
            raise ApaError(
                f"{self.monitor} is {value.item()} after epoch {trainer.current_epoch}: training diverged. "
                "Lower model.optimizer.lr, or clip gradients with trainer.gradient_clip_val=1.0."
            )
