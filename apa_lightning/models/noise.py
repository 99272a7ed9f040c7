"""Input corruptions for denoising autoencoders."""

from __future__ import annotations

import torch
from torch import Tensor

from apa_lightning.errors import ApaError

NOISE_KINDS = ("gaussian", "salt_and_pepper", "masking", "bitflip")


def corrupt(x: Tensor, kind: str, level: float, generator: torch.Generator | None = None) -> Tensor:
    """A corrupted copy of images ``x`` in [0, 1]; ``x`` itself is left untouched.

    gaussian: adds N(0, level^2) per value and clips to [0, 1]. salt_and_pepper: sets a ``level`` fraction
    of pixels (all channels together) half to 0 and half to 1. masking: sets a ``level`` fraction of pixels to 0.
    bitflip (binary images): turns each value v into 1 - v with probability ``level``. The random numbers come
    from ``generator`` when given, else from torch's global generator.
    """
    if kind == "gaussian":
        return (x + level * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)).clamp_(0, 1)
    if kind == "bitflip":
        flip = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) < level
        return torch.where(flip, 1 - x, x)
    pixel = torch.rand(x.shape[0], 1, *x.shape[2:], generator=generator, device=x.device, dtype=x.dtype)
    if kind == "salt_and_pepper":
        return x.masked_fill(pixel < level / 2, 0.0).masked_fill(pixel > 1 - level / 2, 1.0)
    if kind == "masking":
        return x.masked_fill(pixel < level, 0.0)
    raise ValueError(f"unknown noise kind {kind!r}")


def check_noise(kind: str, level: float) -> None:
    """Raise ApaError for an unknown kind or a level outside what that kind accepts."""
    if kind not in NOISE_KINDS:
        raise ApaError(f"unknown noise kind {kind!r}; model.noise.kind must be one of {', '.join(NOISE_KINDS)}.")
    if not 0 <= level <= (float("inf") if kind == "gaussian" else 1):
        bound = "non-negative" if kind == "gaussian" else "a fraction in [0, 1]"
        raise ApaError(f"noise level {level} for {kind!r} must be {bound}.")
