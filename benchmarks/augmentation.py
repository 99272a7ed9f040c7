"""Training augmentation: per image on the loader's workers against per batch on the device.

    python benchmarks/augmentation.py                      # standard at 32 px, report at 224 px
    python benchmarks/augmentation.py --images 512 --rounds 3 --workers 2 --threads 1

Both paths serve the same synthetic CIFAR-shaped data (random uint8 ``(N, 3, 32, 32)`` images, not CIFAR-10
itself) through ``InMemoryImageDataModule`` with one recipe of ``conf/data/augmentation``: ``augment_on=workers``
(torchvision v2 per uint8 image in the DataLoader's worker processes, then to the device and to float) and
``augment_on=device`` (the uint8 batch to the device, then ``BatchAugmentation`` on the whole float batch). A pass
ends with the normalised float batch on the device (CUDA when present, else the CPU). Rounds alternate between
the paths; prints the median images/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from importlib.resources import files

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

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
        seconds: dict[str, list[float]] = {on: [] for on in passes}
        for one_pass in passes.values():
            one_pass()  # warm-up: workers, kernels, kornia's first call
        for _ in range(args.rounds):
            for on, one_pass in passes.items():
                start = time.perf_counter()
                one_pass()
                seconds[on].append(time.perf_counter() - start)
        rate = {on: args.images / statistics.median(times) for on, times in seconds.items()}
        print(
            f"{preset:8s} {size:3d} px: per image on workers {rate['workers']:9.0f} images/s, "
            f"per batch on the device {rate['device']:9.0f} images/s, "
            f"device/workers {rate['device'] / rate['workers']:.1f}x (median of {args.rounds} alternating rounds)"
        )


if __name__ == "__main__":
    main()
