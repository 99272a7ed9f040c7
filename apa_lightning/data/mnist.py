"""MNIST and Fashion-MNIST through torchvision, served from their decoded uint8 tensors."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import torch
from torchvision import datasets

from apa_lightning.data.in_memory import ImageTensorDataset, InMemoryImageDataModule, seeded_split
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
            f"standard IDX files ({', '.join(IDX_FILES)}, gzipped or not), e.g. /usr/share/datasets/fashion-mnist "
            "from Debian's dataset-fashion-mnist package."
        )
    raw.mkdir(parents=True, exist_ok=True)
    for name, path in found.items():
        target = raw / name
        if target.is_file():
            continue
        partial = target.with_suffix(".partial")
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.rename(target)  # never leave a half-written file under the name torchvision reads


class MNISTDataModule(InMemoryImageDataModule):
    """torchvision MNIST: a seeded ``val_size`` split of the 60,000 training images, the official test set."""

    dataset_class: type[datasets.MNIST] = datasets.MNIST

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        source_dir: str | None = None,
        val_size: int = 12000,
        split_seed: int = 42,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.data_dir, self.download, self.source_dir = Path(data_dir).expanduser().resolve(), download, source_dir
        self.val_size, self.split_seed = val_size, split_seed

    @property
    def raw_dir(self) -> Path:
        """Where torchvision reads the uncompressed IDX files."""
        return self.data_dir / self.dataset_class.__name__ / "raw"

    def _missing_message(self) -> str:
        name = self.dataset_class.__name__
        why = "could not be downloaded" if self.download else "downloading is off (data.download=false)"
        return (
            f"{name} is not in {self.raw_dir} (expected {', '.join(IDX_FILES)}) and {why}. "
            f"Ways out: run once with internet access and data.download=true; or set data.source_dir to a folder "
            f"holding the four IDX .gz files (for Fashion-MNIST, Debian's dataset-fashion-mnist package installs them "
            f"in /usr/share/datasets/fashion-mnist); or set data.data_dir to the folder that already holds {name}/raw/."
        )

    def prepare_data(self) -> None:
        if self.source_dir:
            import_idx_files(self.source_dir, self.raw_dir)
        if self.download and not all((self.raw_dir / name).is_file() for name in IDX_FILES):
            try:
                self.dataset_class(str(self.data_dir), train=True, download=True)
            except (RuntimeError, OSError) as exc:  # torchvision raises both when every mirror fails
                raise ApaError(self._missing_message()) from exc

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            dataset = self.dataset_class(str(self.data_dir), train=train, download=False)
        except RuntimeError as exc:  # "Dataset not found. You can use download=True to download it"
            raise ApaError(self._missing_message()) from exc
        self.classes = list(dataset.classes)
        return dataset.data.unsqueeze(1), dataset.targets

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels = self._load(train=True)
        self._check(images, self.classes)
        val, train = seeded_split(len(images), [self.val_size], self.split_seed)
        self.train_set = ImageTensorDataset(images[train], labels[train])
        self.val_set = ImageTensorDataset(images[val], labels[val])
        self.test_set = ImageTensorDataset(*self._load(train=False))


class FashionMNISTDataModule(MNISTDataModule):
    """torchvision Fashion-MNIST with the same split as MNIST."""

    dataset_class = datasets.FashionMNIST
