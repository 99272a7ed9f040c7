"""Datasets small enough to keep decoded in memory, served a whole batch at a time."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from apa_lightning.errors import ApaError


class ImageTensorDataset(Dataset):
    """uint8 images ``(N, C, H, W)`` with int64 labels; a batch is one tensor index, not N PIL decodes."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"expected uint8 (N, C, H, W) images with N labels, got {tuple(images.shape)}")
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def _keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """``__getitems__`` already returns the batch; nothing is left to collate."""
    return batch


def seeded_split(n: int, sizes: Sequence[int], seed: int) -> list[Tensor]:
    """Index tensors for consecutive parts of a seeded permutation of ``range(n)``; the rest is the last part."""
    if sum(sizes) >= n:
        raise ApaError(f"split sizes {list(sizes)} leave no training data out of {n} images; make them smaller.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts, start = [], 0
    for size in sizes:
        parts.append(order[start : start + size])
        start += size
    parts.append(order[start:])
    return parts


class InMemoryImageDataModule(L.LightningDataModule):
    """Base for image sets held as uint8 tensors.

    Batches travel to the device as uint8 and become float images in [0, 1] there, resized to
    ``image_size`` and repeated to ``channels`` (1 -> 3) when those differ from the stored images.
    Subclasses fill ``self.train_set``, ``self.val_set``, ``self.test_set`` and ``self.classes`` in ``setup``.
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        image_size: int = 28,
        channels: int = 1,
        num_classes: int = 10,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ApaError(f"data.batch_size must be at least 1, got {batch_size}.")
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes
        self.train_set: ImageTensorDataset | None = None
        self.val_set: ImageTensorDataset | None = None
        self.test_set: ImageTensorDataset | None = None
        self.classes: list[str] = []

    def _check(self, images: Tensor, classes: Sequence[str]) -> None:
        """Raise ApaError when the configured channels or class count cannot serve these images."""
        stored = images.shape[1]
        if self.channels != stored and not (stored == 1 and self.channels == 3):
            raise ApaError(
                f"{type(self).__name__} stores {stored}-channel images but data.channels={self.channels}; "
                f"use data.channels={stored}" + (" (or 3 to repeat the grey channel)." if stored == 1 else ".")
            )
        if self.num_classes != len(classes):
            raise ApaError(
                f"{type(self).__name__} has {len(classes)} classes but data.num_classes={self.num_classes}; "
                f"set data.num_classes={len(classes)}."
            )

    def _loader(self, dataset: ImageTensorDataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not run")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=_keep_batch,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels = batch
        images = images.float().div_(255)
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        if images.shape[1] != self.channels:
            images = images.expand(-1, self.channels, -1, -1)
        return images, labels
