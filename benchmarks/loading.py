"""One epoch of Fashion-MNIST training batches: torchvision's per-image path against the in-memory batch path.

    python benchmarks/loading.py --source-dir /usr/share/datasets/fashion-mnist   # Debian's dataset-fashion-mnist

Both yield the same float batches in [0, 1] (checked). The baseline is ``FashionMNIST(transform=ToTensor())``
in a DataLoader: one PIL image and one conversion per sample. The contender is what the MNIST-family
datamodules do: one tensor index per batch (``ImageTensorDataset``), then one float conversion per batch
(``on_after_batch_transfer``, on the GPU in training; here on the CPU). Prints the median of ``--repeats``
epochs of each and their ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from apa_lightning.data.in_memory import ImageTensorDataset, InMemoryImageDataModule, keep_batch
from apa_lightning.data.mnist import import_idx_files


def median_epoch(make_loader, convert, repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds of ``repeats`` passes over the loader, and the first batch (converted)."""
    times, first = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        for i, (images, _) in enumerate(make_loader()):
            images = convert(images)
            if i == 0:
                first = images
        times.append(time.perf_counter() - start)
    return statistics.median(times), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", default="/usr/share/datasets/fashion-mnist", help="the four IDX .gz files")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="apa_bench_"))
    import_idx_files(args.source_dir, root / "FashionMNIST" / "raw")
    per_image = datasets.FashionMNIST(str(root), train=True, transform=transforms.ToTensor())
    in_memory = ImageTensorDataset(per_image.data.unsqueeze(1), per_image.targets)
    on_device = InMemoryImageDataModule(image_size=28, channels=1)

    base, base_first = median_epoch(
        lambda: DataLoader(per_image, batch_size=args.batch_size), lambda x: x, args.repeats
    )
    fast, fast_first = median_epoch(
        lambda: DataLoader(in_memory, batch_size=args.batch_size, collate_fn=keep_batch),
        lambda x: on_device.on_after_batch_transfer((x, None), 0)[0],
        args.repeats,
    )
    assert torch.allclose(base_first, fast_first), "the two paths must yield the same batches"
    print(f"torchvision per image (PIL + ToTensor):  {base:7.3f} s per epoch of {len(in_memory)} images")
    print(f"in-memory batches (one index + float):   {fast:7.3f} s per epoch")
    print(f"ratio: the in-memory path is {base / fast:.1f}x faster (median of {args.repeats} epochs each)")


if __name__ == "__main__":
    main()
