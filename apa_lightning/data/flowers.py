"""Oxford Flowers102 through torchvision, decoded once into memory as small (by default 32x32 grey) images."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.datasets import Flowers102
from torchvision.transforms.v2.functional import pil_to_tensor

from apa_lightning.data.in_memory import ImageTensorDataset, InMemoryImageDataModule
from apa_lightning.errors import ApaError

SPLITS = ("train", "val", "test")

log = logging.getLogger(__name__)


def decode_small(path: str | Path, size: int, channels: int, center_crop: bool) -> Tensor:
    """uint8 ``(channels, size, size)``: the JPEG at ``path`` in grey (1 channel) or RGB (3), its central
    square (or the whole picture squeezed, without ``center_crop``) resized with antialiasing."""
    with Image.open(path) as image:
        image.draft("L" if channels == 1 else "RGB", (2 * size, 2 * size))  # let the JPEG decoder downscale
        image = image.convert("L" if channels == 1 else "RGB")
    if center_crop:
        image = ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR)
    else:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return pil_to_tensor(image)


class FlowersDataModule(InMemoryImageDataModule):
    """torchvision Flowers102 in ``data_dir/flowers-102`` (``jpg/image_00001.jpg``..., ``imagelabels.mat``,
    ``setid.mat``), preprocessed as in the course: ``image_size`` x ``image_size`` grey (``channels=3`` keeps
    colour) and served in ``value_range`` (default [-1, 1]).

    Without ``image_ids`` the official split (1,020 / 1,020 / 6,149 images); with a list of image numbers
    (the N of ``image_N.jpg``) only those images, in that order, and they serve training, validation and test
    alike, as in the course, which trained on a couple of dozen pictures and looked at the same ones.
    """

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        image_ids: Sequence[int] | None = None,
        value_range: Sequence[float] = (-1.0, 1.0),
        center_crop: bool = True,
        image_size: int = 32,
        channels: int = 1,
        num_classes: int = 102,
        normalize: str = "none",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            image_size=image_size, channels=channels, num_classes=num_classes, normalize=normalize, **kwargs
        )
        self.save_hyperparameters()
        if channels not in (1, 3):
            raise ApaError(f"data.channels={channels}; Flowers102 is served grey (1) or in colour (3).")
        if len(value_range) != 2 or not value_range[0] < value_range[1]:
            raise ApaError(f"data.value_range={list(value_range)} must be two numbers [low, high] with low < high.")
        if normalize != "none" and tuple(value_range) != (0, 1):
            raise ApaError(
                f"data.value_range={list(value_range)} maps un-normalised images; with data.normalize={normalize} "
                "set data.value_range=[0,1] (or data.normalize=none)."
            )
        if image_ids is not None and not image_ids:
            raise ApaError("data.image_ids is an empty list; give image numbers, or null for the whole dataset.")
        self.data_dir, self.download = Path(data_dir).expanduser().resolve(), download
        self.image_ids = None if image_ids is None else [int(i) for i in image_ids]
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.center_crop = center_crop

    def _missing_message(self) -> str:
        why = "could not be downloaded" if self.download else "downloading is off (data.download=false)"
        return (
            f"Flowers102 is not in {self.data_dir / 'flowers-102'} (expected jpg/image_00001.jpg ... "
            f"jpg/image_08189.jpg, imagelabels.mat and setid.mat, the .mat files with torchvision's md5) and {why}. "
            "Ways out: run once with internet access and data.download=true; or unpack 102flowers.tgz and copy "
            "imagelabels.mat and setid.mat from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ into that folder; "
            "or set data.data_dir to the folder that holds flowers-102/."
        )

    def _open(self, split: str, download: bool = False) -> Flowers102:
        try:
            # a loader that returns the path: listing the files and labels decodes nothing
            return Flowers102(str(self.data_dir), split=split, download=download, loader=str)
        except (RuntimeError, OSError) as exc:  # missing or changed files, or a failed download
            raise ApaError(self._missing_message()) from exc

    def prepare_data(self) -> None:
        if self.download:
            self._open("train", download=True)

    def _decode(self, samples: list[tuple[str, int]]) -> tuple[Tensor, Tensor]:
        images = [decode_small(path, self.image_size, self.channels, self.center_crop) for path, _ in samples]
        return torch.stack(images), torch.tensor([label for _, label in samples], dtype=torch.long)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        splits = [[dataset[i] for i in range(len(dataset))] for dataset in map(self._open, SPLITS)]
        self.classes = list(Flowers102.classes)
        if self.image_ids is None:
            parts = [self._decode(samples) for samples in splits]
        else:
            by_id = {int(Path(path).stem.split("_")[-1]): (path, label) for part in splits for path, label in part}
            unknown = [i for i in self.image_ids if i not in by_id]
            if unknown:
                raise ApaError(
                    f"data.image_ids lists {unknown}, which Flowers102 in {self.data_dir / 'flowers-102'} does not "
                    f"have (its images are numbered 1 to {max(by_id)}); remove them from the list."
                )
            kept = self._decode([by_id[i] for i in self.image_ids])
            names = sorted({self.classes[label] for label in kept[1].tolist()})
            log.info("Flowers102: kept %d images, of the classes %s", len(kept[1]), ", ".join(names))
            parts = [kept, kept, kept]
        self._check(parts[0][0], self.classes)
        self.set_splits(*(ImageTensorDataset(images, labels) for images, labels in parts))

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels = super().on_after_batch_transfer(batch, dataloader_idx)
        low, high = self.value_range
        return images * (high - low) + low, labels
