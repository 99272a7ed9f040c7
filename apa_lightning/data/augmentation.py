"""The training augmentation of a batch on the device: the torchvision v2 steps of ``data.augmentation``, each
image with its own random parameters.

The same instantiated steps also serve the per-image path (``data.augment_on=workers``, a ``v2.Compose`` on the
loader's workers), so a recipe is described once. Resize is the torchvision transform itself (it is not random);
flip is kornia's; padded crop is a few tensor operations (``BatchRandomCrop``: faster than kornia's at 32 pixels,
see there); rotation and affine are kornia's affine warp, colour jitter is kornia's (one random order of its four
adjustments per batch, where torchvision draws one per image; hue leaves 1-channel images unchanged, as in
torchvision: see ``BatchColorJitter``). Every step draws from torch's generator of the batch's device.
"""

from __future__ import annotations

from collections.abc import Mapping

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms import v2

from apa_lightning.errors import ApaError

# torchvision's RandomCrop padding modes -> torch.nn.functional.pad's ("symmetric" has no batched counterpart)
PAD_MODES = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}


class BatchRandomCrop(nn.Module):
    """Pads a ``(B, C, H, W)`` batch by ``padding`` (``F.pad``'s order: left, right, top, bottom) and cuts a
    ``size`` (height, width) window from each image at its own uniformly drawn offset, as ``v2.RandomCrop`` does
    per image.

    Kept over kornia's ``RandomCrop(padding=...)`` because it is clearly faster at the CIFAR size:
    ``benchmarks/augmentation.py`` (CPU, 1 thread, batches of 128, two runs of 21 and 7 alternating rounds) gave
    kornia/this 0.66x and 0.58x at 32 px (padding 4), though 1.78x and 1.64x at 224 px (padding 10); kornia's flip
    ran at 0.90x and 2.09x at 32 px, 0.96x and 0.99x at 224 px, within this shared machine's noise, and replaced
    the hand-written one. kornia cuts each image with a Python-level slice after reading the offsets back to the
    host (a device sync per batch on a GPU), this is two gathers; rerun the benchmark on a GPU before switching.
    """

    def __init__(
        self, size: tuple[int, int], padding: tuple[int, int, int, int], fill: float = 0.0, mode: str = "constant"
    ) -> None:
        super().__init__()
        self.size, self.padding, self.fill, self.mode = size, padding, fill, mode

    def forward(self, images: Tensor) -> Tensor:
        fill = self.fill if self.mode == "constant" else None
        padded = F.pad(images, self.padding, mode=self.mode, value=fill)
        (height, width), (padded_h, padded_w) = self.size, padded.shape[-2:]
        if height > padded_h or width > padded_w:
            raise ApaError(
                f"data.augmentation crop of {height}x{width} does not fit the padded {padded_h}x{padded_w} images; "
                "resize first (a resize step before crop) or set the crop size to data.image_size."
            )
        n, device = len(images), images.device
        top = torch.randint(0, padded_h - height + 1, (n, 1), device=device)
        left = torch.randint(0, padded_w - width + 1, (n, 1), device=device)
        rows = (top + torch.arange(height, device=device)).view(n, 1, height, 1)
        cols = (left + torch.arange(width, device=device)).view(n, 1, 1, width)
        channels = images.shape[1]
        rows = rows.expand(n, channels, height, padded_w)
        picked_rows = padded.gather(2, rows)  # (B, C, height, padded_w)
        return picked_rows.gather(3, cols.expand(n, channels, height, width))


def _number_fill(name: str, fill: object) -> float:
    """A torchvision fill (uint8 units) as a value of images in [0, 1]."""
    if isinstance(fill, (int, float)) and not isinstance(fill, bool):
        return float(fill) / 255
    raise ApaError(
        f"data.augmentation.{name}: fill={fill!r} cannot be applied on the device (a single number only); "
        "use a number or data.augment_on=workers."
    )


def _resample(name: str, transform: v2.Transform) -> str:
    mode = str(getattr(transform.interpolation, "value", transform.interpolation))
    if mode not in ("nearest", "bilinear"):
        raise ApaError(
            f"data.augmentation.{name}: interpolation {mode!r} has no batched counterpart (nearest or bilinear); "
            "choose one of those or data.augment_on=workers."
        )
    return mode.upper()


def _unsupported(name: str, transform: object, why: str) -> ApaError:
    return ApaError(
        f"data.augmentation.{name} ({type(transform).__name__}) {why} cannot run on the device; "
        f"use data.augment_on=workers (per image, on the loader's workers) or switch the step off with "
        f"data.augmentation.{name}=null."
    )


def batched_step(name: str, transform: object) -> nn.Module:
    """The batched counterpart of one torchvision v2 step of ``data.augmentation`` (named ``name``).

    Raises ApaError for a transform or an option that has none, naming the step and the way out.
    """
    if isinstance(transform, v2.Resize):
        return transform  # deterministic: the same on a whole batch as on each image
    if isinstance(transform, v2.RandomHorizontalFlip):
        return K.RandomHorizontalFlip(p=transform.p)  # each image its own coin
    if isinstance(transform, v2.RandomCrop):
        if transform.pad_if_needed:
            raise _unsupported(name, transform, "with pad_if_needed=true")
        if transform.padding_mode not in PAD_MODES:
            raise _unsupported(name, transform, f"with padding_mode={transform.padding_mode!r}")
        padding = tuple(transform.padding or (0, 0, 0, 0))  # v2 keeps it in F.pad's order
        fill = _number_fill(name, transform.fill)
        return BatchRandomCrop(tuple(transform.size), padding, fill, PAD_MODES[transform.padding_mode])
    if isinstance(transform, v2.RandomRotation):
        if transform.expand or transform.center is not None:
            raise _unsupported(name, transform, "with expand or center")
        low, high = transform.degrees  # counter-clockwise, while kornia's affine angle turns clockwise
        return _kornia_affine(name, transform, degrees=(-high, -low))
    if isinstance(transform, v2.RandomAffine):
        if transform.center is not None:
            raise _unsupported(name, transform, "with center")
        return _kornia_affine(
            name,
            transform,
            degrees=tuple(transform.degrees),
            translate=tuple(transform.translate) if transform.translate else None,
            scale=tuple(transform.scale) if transform.scale else None,
            shear=tuple(transform.shear) if transform.shear else None,
        )
    if isinstance(transform, v2.ColorJitter):
        return BatchColorJitter(transform)
    raise _unsupported(name, transform, "has no batched counterpart and")


class BatchColorJitter(nn.Module):
    """kornia's ColorJitter with the ranges of a ``v2.ColorJitter``: brightness, contrast, saturation and hue
    factors drawn per image.

    Two differences from torchvision: kornia draws one random order of the four adjustments per batch (torchvision
    one per image), and on 1-channel images hue is left out, as torchvision leaves grey images unchanged by it
    (kornia would refuse them; saturation already leaves them unchanged in both).
    """

    def __init__(self, transform: v2.ColorJitter) -> None:
        super().__init__()
        ranges = {k: getattr(transform, k) or 0.0 for k in ("brightness", "contrast", "saturation", "hue")}
        self.colour = K.ColorJitter(**ranges, p=1.0)
        self.grey = K.ColorJitter(**{**ranges, "hue": 0.0}, p=1.0)

    def forward(self, images: Tensor) -> Tensor:
        return (self.grey if images.shape[1] == 1 else self.colour)(images)


def _kornia_affine(name: str, transform: v2.Transform, **ranges: object) -> K.RandomAffine:
    """kornia's per-image random affine warp with the interpolation and constant fill of ``transform``
    (rotation too: kornia's RandomRotation cannot fill)."""
    fill = _number_fill(name, transform.fill)
    return K.RandomAffine(
        **ranges,
        resample=_resample(name, transform),
        padding_mode="fill" if fill else "zeros",
        fill_value=fill if fill else None,
        p=1.0,
    )


class BatchAugmentation(nn.Module):
    """The named steps in order on a float ``(B, C, H, W)`` batch in [0, 1], each image with its own random
    parameters drawn from torch's generator of the batch's device (seeded per epoch by ``EpochSeed``)."""

    def __init__(self, steps: Mapping[str, object]) -> None:
        super().__init__()
        self.steps = nn.ModuleDict({name: batched_step(name, transform) for name, transform in steps.items()})
        self.device = torch.device("cpu")

    def forward(self, images: Tensor) -> Tensor:
        if images.device != self.device:  # kornia draws its parameters on the device it was moved to
            self.to(images.device)
            self.device = images.device
        for step in self.steps.values():
            images = step(images)
        return images
