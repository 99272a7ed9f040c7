"""SVHN (Street View House Numbers, 32x32 RGB digits) from torchvision's .mat files, read by their structure."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torchvision.datasets import SVHN
from torchvision.datasets.utils import download_url

from apa_lightning.data.in_memory import ImageTensorDataset, InMemoryImageDataModule, seeded_split
from apa_lightning.errors import ApaError

SPLIT_FILES = {split: SVHN.split_list[split][1] for split in ("train", "test", "extra")}


def load_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``(N, 3, 32, 32)`` and int64 digit labels 0-9 from an SVHN ``.mat`` file: ``X`` uint8
    ``(32, 32, 3, N)`` and ``y`` ``(N, 1)`` in 1..10, where 10 stands for the digit 0.

    Raises ApaError naming the file when it cannot be read or does not have that structure.
    """
    import scipy.io

    try:
        content = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError... for a damaged file
        raise ApaError(f"{path} is not a readable MATLAB file ({exc}); delete it and download it again.") from exc
    images, labels = content.get("X"), content.get("y")
    if images is None or labels is None:
        keys = sorted(k for k in content if not k.startswith("__"))
        raise ApaError(f"{path} holds {keys}, not the SVHN arrays X and y; it is not an SVHN file.")
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if images.dtype.name != "uint8" or images.ndim != 4 or images.shape[:3] != (32, 32, 3) or labels.ndim != 1:
        raise ApaError(
            f"{path}: X is {images.dtype.name} {images.shape} and y is {labels.shape}; SVHN files hold X uint8 "
            "(32, 32, 3, N) and y (N, 1). Delete the file and download it again."
        )
    valid = not len(labels) or (labels.min() >= 1 and labels.max() <= 10 and (labels == labels.round()).all())
    if images.shape[3] != len(labels) or not valid:
        low, high = (labels.min(), labels.max()) if len(labels) else (0, 0)
        raise ApaError(
            f"{path}: {images.shape[3]} images with {len(labels)} labels in [{low:g}, {high:g}]; SVHN files "
            "have one whole-number label in 1..10 per image. Delete the file and download it again."
        )
    tensor = torch.from_numpy(images).permute(3, 2, 0, 1).contiguous()  # (H, W, C, N) -> (N, C, H, W)
    return tensor, torch.from_numpy(labels.astype("int64") % 10)  # label 10 is the digit 0


class SVHNDataModule(InMemoryImageDataModule):
    """SVHN from ``train_32x32.mat`` and ``test_32x32.mat`` in ``data_dir`` (torchvision's layout): a seeded
    ``val_size`` split of the 73,257 training images, the official 26,032 test images untouched. With
    ``use_extra`` the 531,131 images of ``extra_32x32.mat`` join the training part only.

    The files are read with scipy by their structure (torchvision's SVHN class refuses any file whose md5
    differs); torchvision only downloads them, in ``prepare_data`` when ``download`` is true and a file is missing.
    """

    stored_channels = 3  # task=predict reads images in this many channels (data.channels=3 repeats grey)
    stored_size = 32  # task=predict reads images at this size, then resizes them as training does

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        val_size: int = 7326,
        split_seed: int = 42,
        use_extra: bool = False,
        image_size: int = 32,
        channels: int = 3,
        num_classes: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_size=image_size, channels=channels, num_classes=num_classes, **kwargs)
        self.save_hyperparameters()
        self.data_dir, self.download = Path(data_dir).expanduser().resolve(), download
        self.val_size, self.split_seed, self.use_extra = val_size, split_seed, use_extra
        self.splits = ("train", "test", "extra") if use_extra else ("train", "test")

    def _missing(self) -> list[str]:
        return [SPLIT_FILES[split] for split in self.splits if not (self.data_dir / SPLIT_FILES[split]).is_file()]

    def _missing_message(self, missing: list[str]) -> str:
        why = "could not be downloaded" if self.download else "downloading is off (data.download=false)"
        extra = "; or set data.use_extra=false to train without extra_32x32.mat" if self.use_extra else ""
        return (
            f"SVHN is not complete in {self.data_dir}: {', '.join(missing)} missing (expected "
            f"{', '.join(SPLIT_FILES[s] for s in self.splits)} directly in that folder), and {why}. Ways out: run "
            "once with internet access and data.download=true; or copy the files from "
            f"http://ufldl.stanford.edu/housenumbers/ there; or set data.data_dir to the folder holding them{extra}."
        )

    def prepare_data(self) -> None:
        if not self.download:
            return
        for split in self.splits:
            url, name, md5 = SVHN.split_list[split]
            if (self.data_dir / name).is_file():
                continue
            # renamed only once complete and checked, never a truncated file; unique per process (concurrent runs)
            partial = f".{name}.{os.getpid()}.partial"
            try:
                download_url(url, str(self.data_dir), filename=partial, md5=md5)
            except (RuntimeError, OSError) as exc:  # torchvision raises both when the download fails
                (self.data_dir / partial).unlink(missing_ok=True)
                raise ApaError(self._missing_message(self._missing())) from exc
            (self.data_dir / partial).rename(self.data_dir / name)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        missing = self._missing()
        if missing:
            raise ApaError(self._missing_message(missing))
        self.classes = [str(digit) for digit in range(10)]
        images, labels = load_svhn_mat(self.data_dir / SPLIT_FILES["train"])
        self._check(images, self.classes)
        val, train = seeded_split(len(images), [self.val_size], self.split_seed)
        train_images, train_labels = images[train], labels[train]
        if self.use_extra:
            extra_images, extra_labels = load_svhn_mat(self.data_dir / SPLIT_FILES["extra"])
            train_images, train_labels = (
                torch.cat([train_images, extra_images]),
                torch.cat([train_labels, extra_labels]),
            )
        self.set_splits(
            ImageTensorDataset(train_images, train_labels),
            ImageTensorDataset(images[val], labels[val]),
            ImageTensorDataset(*load_svhn_mat(self.data_dir / SPLIT_FILES["test"])),
        )
