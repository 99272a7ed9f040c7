"""CIFAR-10 through torchvision."""

from __future__ import annotations

from typing import Any

import torch
from torchvision import datasets

from apa_lightning.data.torchvision_sets import TorchvisionDataModule


class CIFAR10DataModule(TorchvisionDataModule):
    """torchvision CIFAR-10: a seeded ``val_size`` split of the 50,000 training images (default 5,000), the
    official 10,000 test images. Normalised by the training split's per-channel mean and std by default."""

    stored_channels = 3  # task=predict reads images in this many channels (data.channels=3 repeats grey)
    stored_size = 32  # task=predict reads images at this size, then resizes them as training does

    dataset_class = datasets.CIFAR10
    expected_files = "cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta"

    def __init__(self, val_size: int = 5000, normalize: str = "dataset", **kwargs: Any) -> None:
        super().__init__(val_size=val_size, normalize=normalize, **kwargs)
        self.save_hyperparameters()

    def _arrays(self, dataset: datasets.CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor(dataset.targets, dtype=torch.long)
