"""Numeric precision chosen at run time: the trainer's mixed precision and the float32 matmul precision."""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

MIXED = "mixed"  # trainer.precision=mixed (trainer=gpu): the fastest mixed precision the device supports


def gpu_available() -> bool:
    """Whether Lightning's ``accelerator="gpu"`` has a device: CUDA, or Apple's MPS."""
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def mixed_precision() -> str:
    """``bf16-mixed`` on a CUDA GPU with native bfloat16 (Ampere and newer) and on the CPU, else ``16-mixed``."""
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported(including_emulation=False):
        return "16-mixed"
    return "bf16-mixed"


def resolved_precision(trainer_cfg: Any) -> dict[str, str]:
    """``{"precision": <Lightning's name>}`` for ``trainer.precision=mixed``, logged; empty for any other value,
    which goes to the Trainer as it is."""
    if trainer_cfg.get("precision") != MIXED:
        return {}
    precision = mixed_precision()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU"
    log.info("trainer.precision=mixed: training with %s (%s).", precision, device)
    return {"precision": precision}


def apply_matmul_precision(precision: str | None) -> None:
    """Set torch's float32 matmul precision (``highest``: full float32; ``high``: TF32 on GPUs that have it;
    ``medium``: bfloat16); None leaves it as it is."""
    if precision is not None:
        torch.set_float32_matmul_precision(precision)
