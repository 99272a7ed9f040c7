"""scikit-learn's bundled 8x8 handwritten digits, made MNIST-like: the offline default dataset."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from apa_lightning.data.in_memory import ImageTensorDataset, InMemoryImageDataModule, seeded_split


def load_digits_as_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as uint8 ``(N, 1, 28, 28)``: upscaled to 20x20 and centred with a 4-pixel border,
    as MNIST centres its digits, and their int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div(16).unsqueeze(1)
    images = F.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False)
    images = F.pad(images, (4, 4, 4, 4))
    return images.clamp(0, 1).mul(255).round().to(torch.uint8), torch.from_numpy(digits.target).long()


class DigitsDataModule(InMemoryImageDataModule):
    """The embedded digits with a seeded train / validation / test split."""

    stored_channels = 1  # task=predict reads images in this many channels (data.channels=3 repeats grey)
    stored_size = 28  # task=predict reads images at this size, then resizes them as training does

    def __init__(self, val_size: int = 180, test_size: int = 360, split_seed: int = 42, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.val_size, self.test_size, self.split_seed = val_size, test_size, split_seed

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels = load_digits_as_mnist()
        self.classes = [str(d) for d in range(10)]
        self._check(images, self.classes)
        val, test, train = seeded_split(len(images), [self.val_size, self.test_size], self.split_seed)
        self.set_splits(
            ImageTensorDataset(images[train], labels[train]),
            ImageTensorDataset(images[val], labels[val]),
            ImageTensorDataset(images[test], labels[test]),
        )
