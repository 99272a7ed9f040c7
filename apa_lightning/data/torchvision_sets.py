"""torchvision datasets with an official train/test split, held in memory as uint8 tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torchvision.datasets import VisionDataset

from apa_lightning.data.in_memory import ImageTensorDataset, InMemoryImageDataModule, seeded_split
from apa_lightning.errors import ApaError


class TorchvisionDataModule(InMemoryImageDataModule):
    """A torchvision dataset in ``data_dir``: a seeded ``val_size`` split of the official training images,
    the official test images untouched. Downloads in ``prepare_data`` when ``download`` is true.

    Subclasses set ``dataset_class`` and ``expected_files`` (what must lie under ``data_dir``, for the error
    message) and implement ``_arrays(dataset)``.
    """

    dataset_class: ClassVar[type[VisionDataset]]
    expected_files: str  # a class attribute, or a property

    def __init__(
        self, data_dir: str = "data", download: bool = True, val_size: int = 5000, split_seed: int = 42, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir, self.download = Path(data_dir).expanduser().resolve(), download
        self.val_size, self.split_seed = val_size, split_seed

    def _missing_message(self) -> str:
        name = self.dataset_class.__name__
        why = "could not be downloaded" if self.download else "downloading is off (data.download=false)"
        return (
            f"{name} is not in {self.data_dir} (expected {self.expected_files}) and {why}. Ways out: run once with "
            f"internet access and data.download=true; or set data.data_dir to the folder that already holds it"
            f"{self._other_ways_out()}."
        )

    def _other_ways_out(self) -> str:
        return ""

    def _is_present(self) -> bool:
        try:
            self.dataset_class(str(self.data_dir), train=False, download=False)
        except RuntimeError:
            return False
        return True

    def prepare_data(self) -> None:
        if self.download and not self._is_present():
            try:
                self.dataset_class(str(self.data_dir), train=True, download=True)
            except (RuntimeError, OSError) as exc:  # torchvision raises both when the download fails
                raise ApaError(self._missing_message()) from exc

    def _arrays(self, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``(N, C, H, W)`` and int64 labels of a loaded torchvision dataset."""
        raise NotImplementedError

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            dataset = self.dataset_class(str(self.data_dir), train=train, download=False)
        except RuntimeError as exc:  # "Dataset not found or corrupted. You can use download=True ..."
            raise ApaError(self._missing_message()) from exc
        self.classes = list(dataset.classes)
        return self._arrays(dataset)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels = self._load(train=True)
        self._check(images, self.classes)
        val, train = seeded_split(len(images), [self.val_size], self.split_seed)
        self.set_splits(
            ImageTensorDataset(images[train], labels[train]),
            ImageTensorDataset(images[val], labels[val]),
            ImageTensorDataset(*self._load(train=False)),
        )
