"""Training augmentation: per image on the loader's workers against per batch on the device, and kornia's flip and
padded crop against the hand-written ones.

    python benchmarks/augmentation.py                      # standard at 32 px, report at 224 px
    python benchmarks/augmentation.py --images 512 --rounds 3 --workers 2 --threads 1

Both paths serve the same synthetic CIFAR-shaped data (random uint8 ``(N, 3, 32, 32)`` images, not CIFAR-10
itself) through ``InMemoryImageDataModule`` with one recipe of ``conf/data/augmentation``: ``augment_on=workers``
(torchvision v2 per uint8 image in the DataLoader's worker processes, then to the device and to float) and
``augment_on=device`` (the uint8 batch to the device, then ``BatchAugmentation`` on the whole float batch). A pass
ends with the normalised float batch on the device (CUDA when present, else the CPU). Rounds alternate between
the paths; prints the median images/s of each and their ratio.

Then the batched flip and padded crop of each recipe (``p=0.5``; the recipe's crop size and padding) on float
batches of the same shape on the same device: the hand-written step against kornia's ``RandomHorizontalFlip`` /
``RandomCrop(padding=...)``, alternating rounds, median images/s and kornia/hand-written. ``data.augmentation``
runs kornia's flip (as fast) and the hand-written crop (faster at 32 pixels); ``HandFlip`` is the flip it replaced,
kept here as the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from importlib.resources import files

import kornia.augmentation as K
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from apa_lightning.data.augmentation import batched_step
from apa_lightning.data.in_memory import ImageTensorDataset, InMemoryImageDataModule, keep_batch

CASES = (("standard", 32), ("report", 224))


def recipe(preset: str, image_size: int) -> dict:
    """The steps of ``conf/data/augmentation/<preset>.yaml`` with ``${data.image_size}`` = ``image_size``."""
    steps = OmegaConf.load(files("apa_lightning.conf") / "data" / "augmentation" / f"{preset}.yaml")
    cfg = OmegaConf.create({"data": {"image_size": image_size, "augmentation": steps}})
    return OmegaConf.to_container(cfg.data.augmentation, resolve=True)


def make_pass(
    images: torch.Tensor, preset: str, image_size: int, augment_on: str, args: argparse.Namespace
) -> Callable[[], None]:
    """One pass over ``images`` through the datamodule's path ``augment_on``, ending on ``args.device``."""
    dm = InMemoryImageDataModule(
        image_size=image_size,
        channels=3,
        normalize="dataset",
        augmentation=recipe(preset, image_size),
        augment_on=augment_on,
    )
    dm.set_splits(*(ImageTensorDataset(images, torch.zeros(len(images))) for _ in range(3)))
    workers = args.workers if augment_on == "workers" else 0
    loader = DataLoader(
        dm.train_set,
        batch_size=args.batch_size,
        num_workers=workers,
        collate_fn=keep_batch,
        pin_memory=args.device.type == "cuda",
        persistent_workers=workers > 0,  # started once, before the timed rounds
    )

    def one_pass() -> None:
        for batch, _ in loader:
            out = dm.float_images(batch.to(args.device, non_blocking=True), augment=True)
            assert out.shape[-2:] == (image_size, image_size)
        if args.device.type == "cuda":
            torch.cuda.synchronize()

    return one_pass


def alternating_rates(passes: dict[str, Callable[[], None]], images: int, rounds: int) -> dict[str, float]:
    """Median images/s of each pass over ``images`` images: one warm-up each, then ``rounds`` alternating rounds."""
    for one_pass in passes.values():
        one_pass()  # warm-up: workers, kernels, kornia's first call
    seconds: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(rounds):
        for name, one_pass in passes.items():
            start = time.perf_counter()
            one_pass()
            seconds[name].append(time.perf_counter() - start)
    return {name: images / statistics.median(times) for name, times in seconds.items()}


def step_pass(step: nn.Module, batches: list[Tensor], device: torch.device) -> Callable[[], None]:
    """One pass of ``step`` over ``batches`` (float batches on ``device``)."""
    step.to(device)  # kornia draws its parameters on the device it was moved to

    def one_pass() -> None:
        for batch in batches:
            step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return one_pass


class HandFlip(nn.Module):
    """The hand-written batched flip that ``data.augmentation`` ran before kornia's: each image mirrored with
    probability ``p``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, images: Tensor) -> Tensor:
        flip = torch.rand(len(images), device=images.device) < self.p
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def steps_against_kornia(preset: str, size: int) -> dict[str, tuple[nn.Module, nn.Module]]:
    """The recipe's flip and padded crop: the hand-written step and kornia's, with the same parameters."""
    pad = recipe(preset, size)["crop"]["padding"]
    return {
        "flip": (HandFlip(0.5), batched_step("flip", v2.RandomHorizontalFlip(0.5))),
        "crop": (batched_step("crop", v2.RandomCrop(size, padding=pad)), K.RandomCrop((size, size), padding=pad)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="synthetic images per pass")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=4, help="loader workers of the per-image path (cifar10's)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes of each path, alternating")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch's CPU threads")
    args = parser.parse_args()
    args.device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8)
    print(
        f"synthetic CIFAR-shaped data: {args.images} random uint8 images of 3x32x32 (not CIFAR-10), batch "
        f"{args.batch_size}, device {args.device}, {args.workers} loader workers for the per-image path, "
        f"{args.threads} torch threads in the main process"
    )
    for preset, size in CASES:
        passes = {on: make_pass(images, preset, size, on, args) for on in ("workers", "device")}
        rate = alternating_rates(passes, args.images, args.rounds)
        print(
            f"{preset:8s} {size:3d} px: per image on workers {rate['workers']:9.0f} images/s, "
            f"per batch on the device {rate['device']:9.0f} images/s, "
            f"device/workers {rate['device'] / rate['workers']:.1f}x (median of {args.rounds} alternating rounds)"
        )
    for preset, size in CASES:
        batches = [torch.rand(len(chunk), 3, size, size, device=args.device) for chunk in images.split(args.batch_size)]
        for name, (hand, kornia) in steps_against_kornia(preset, size).items():
            passes = {"hand": step_pass(hand, batches, args.device), "kornia": step_pass(kornia, batches, args.device)}
            rate = alternating_rates(passes, args.images, args.rounds)
            print(
                f"{name:8s} {size:3d} px: hand-written {rate['hand']:9.0f} images/s, kornia {rate['kornia']:9.0f} "
                f"images/s, kornia/hand-written {rate['kornia'] / rate['hand']:.2f}x "
                f"(median of {args.rounds} alternating rounds)"
            )


if __name__ == "__main__":
    main()
