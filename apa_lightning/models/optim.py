"""The one place that turns optimizer and scheduler configs into ``configure_optimizers`` output."""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.utils import instantiate

from apa_lightning.errors import ApaError

# Keys of a scheduler config that Lightning reads; the rest go to the scheduler's constructor.
LIGHTNING_SCHEDULER_KEYS = ("monitor", "interval", "frequency")


def configure_optimization(
    module: L.LightningModule, optimizer: dict[str, Any], scheduler: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build the optimizer over ``module``'s trainable parameters (and the scheduler) from ``_target_`` configs,
    as ``LightningModule.configure_optimizers`` returns them. A scheduler's ``total_steps: null`` (OneCycleLR)
    becomes the trainer's number of optimizer steps. Raises ApaError when a config has no ``_target_``.
    """
    trainable = [p for p in module.parameters() if p.requires_grad]
    if "_target_" not in optimizer:
        raise ApaError(f"model.optimizer needs a _target_ (e.g. torch.optim.Adam), got {optimizer}.")
    built: dict[str, Any] = {"optimizer": instantiate(optimizer, params=trainable)}
    if scheduler:
        if "_target_" not in scheduler:
            raise ApaError(f"model.scheduler needs a _target_ (e.g. torch.optim.lr_scheduler.StepLR), got {scheduler}.")
        kwargs = {k: v for k, v in scheduler.items() if k not in LIGHTNING_SCHEDULER_KEYS}
        if "total_steps" in kwargs and kwargs["total_steps"] is None:
            kwargs["total_steps"] = module.trainer.estimated_stepping_batches
        built["lr_scheduler"] = {
            "scheduler": instantiate(kwargs, optimizer=built["optimizer"]),
            **{k: scheduler[k] for k in LIGHTNING_SCHEDULER_KEYS if k in scheduler},
        }
    return built
