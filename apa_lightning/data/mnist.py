"""MNIST and Fashion-MNIST through torchvision, with an offline import of the IDX files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import torch
from torchvision import datasets

from apa_lightning.data.torchvision_sets import TorchvisionDataModule
from apa_lightning.errors import ApaError

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def import_idx_files(source_dir: str | Path, raw_dir: str | Path) -> None:
    """Copy the four IDX files from ``source_dir`` (``.gz`` or uncompressed) into torchvision's ``raw_dir``.

    Raises ApaError naming the missing files when ``source_dir`` does not hold all four.
    """
    source, raw = Path(source_dir).expanduser(), Path(raw_dir)
    found = {name: next((p for p in (source / f"{name}.gz", source / name) if p.is_file()), None) for name in IDX_FILES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise ApaError(
            f"data.source_dir={source} lacks {', '.join(f'{m}(.gz)' for m in missing)}; it must hold the four "
            f"standard IDX files ({', '.join(IDX_FILES)}, gzipped or not), e.g. "
            "/usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist package."
        )
    raw.mkdir(parents=True, exist_ok=True)
    for name, path in found.items():
        target = raw / name
        if target.is_file():
            continue
        partial = target.with_suffix(".partial")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.rename(target)  # never leave a half-written file under the name torchvision reads


class MNISTDataModule(TorchvisionDataModule):
    """torchvision MNIST: by default 48,000 train / 12,000 validation (seeded) and the official 10,000 test.

    ``source_dir``, when set, is a folder with the four IDX files that ``prepare_data`` imports instead of
    downloading (for machines without internet).
    """

    dataset_class = datasets.MNIST

    def __init__(self, source_dir: str | None = None, val_size: int = 12000, **kwargs: Any) -> None:
        super().__init__(val_size=val_size, **kwargs)
        self.save_hyperparameters()
        self.source_dir = source_dir

    @property
    def expected_files(self) -> str:
        return f"{self.dataset_class.__name__}/raw/ with {', '.join(IDX_FILES)}"

    @property
    def raw_dir(self) -> Path:
        """Where torchvision reads the uncompressed IDX files."""
        return self.data_dir / self.dataset_class.__name__ / "raw"

    def _other_ways_out(self) -> str:
        return (
            "; or set data.source_dir to a folder holding the four IDX .gz files (for Fashion-MNIST, Debian's "
            "dataset-fashion-mnist package installs them in /usr/share/datasets/fashion-mnist)"
        )

    def prepare_data(self) -> None:
        if self.source_dir:
            import_idx_files(self.source_dir, self.raw_dir)
        super().prepare_data()

    def _arrays(self, dataset: datasets.MNIST) -> tuple[torch.Tensor, torch.Tensor]:
        return dataset.data.unsqueeze(1), dataset.targets


class FashionMNISTDataModule(MNISTDataModule):
    """torchvision Fashion-MNIST with the same split as MNIST."""

    dataset_class = datasets.FashionMNIST
