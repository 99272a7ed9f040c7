"""EuroSAT (RGB, 64x64, 10 land-use classes) through torchvision, with a seeded stratified split."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.datasets import EuroSAT
from torchvision.io import ImageReadMode, decode_image
from torchvision.io import read_file as read_bytes

from apa_lightning.data.in_memory import ImageTensorDataset, InMemoryImageDataModule
from apa_lightning.data.splits import SPLITS, stratified_split, write_split_csv
from apa_lightning.errors import ApaError


def read_rgb(path: str) -> torch.Tensor:
    """The image file ``path`` decoded as uint8 RGB ``(3, H, W)``.

    Raises ApaError naming the file when it is empty, truncated or not an image.
    """
    try:
        return decode_image(read_bytes(path), mode=ImageReadMode.RGB)
    except RuntimeError as exc:  # torchvision's decoders: "Image is incomplete or truncated", "Unsupported ..."
        reason = re.sub(r"^\w+, \S+:\d+, ", "", str(exc).strip()).split(". ")[0]  # without the C++ source line
        raise ApaError(
            f"EuroSAT image {path} cannot be decoded ({reason}); the file is corrupt or truncated. Replace it "
            "with a good copy, or delete the eurosat folder and download it again (data.download=true)."
        ) from None


class EuroSATDataModule(InMemoryImageDataModule):
    """torchvision EuroSAT in ``data_dir/eurosat/2750``, decoded once into memory (27,000 x 3 x 64 x 64 uint8).

    torchvision has no split: ``fractions`` (train, validation, test; default 0.7/0.1/0.2, so 5,400 test
    images) are cut per class with ``split_seed``. The file list of each part is written to
    ``<split_dir>/data_split.csv`` so two runs can be checked to test on the same images.
    """

    stored_channels = 3  # task=predict reads images in this many channels (data.channels=3 repeats grey)
    stored_size = 64  # task=predict reads images at this size, then resizes them as training does

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        fractions: Sequence[float] = (0.7, 0.1, 0.2),
        split_seed: int = 42,
        split_dir: str | None = None,
        image_size: int = 64,
        channels: int = 3,
        num_classes: int = 10,
        normalize: str = "dataset",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            image_size=image_size, channels=channels, num_classes=num_classes, normalize=normalize, **kwargs
        )
        self.save_hyperparameters()
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise ApaError(f"data.fractions={list(fractions)} must be three non-negative parts summing to 1.")
        self.data_dir, self.download = Path(data_dir).expanduser().resolve(), download
        self.fractions, self.split_seed = list(fractions), split_seed
        self.split_dir = Path(split_dir) if split_dir else None
        self.files: list[str] = []

    def _missing_message(self) -> str:
        why = "could not be downloaded" if self.download else "downloading is off (data.download=false)"
        return (
            f"EuroSAT is not in {self.data_dir / 'eurosat' / '2750'} (expected one folder of .jpg images per class) "
            f"and {why}. Ways out: run once with internet access and data.download=true; or set data.data_dir to "
            "the folder that holds eurosat/2750/."
        )

    def _open(self, download: bool) -> EuroSAT:
        try:
            return EuroSAT(str(self.data_dir), download=download, loader=read_rgb)
        except (RuntimeError, OSError) as exc:  # missing folder, or a failed download
            raise ApaError(self._missing_message()) from exc

    def prepare_data(self) -> None:
        if self.download:
            self._open(download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        dataset = self._open(download=False)
        self.classes = list(dataset.classes)
        images = [dataset[i][0] for i in range(len(dataset))]
        shapes = {tuple(image.shape) for image in images}
        if len(shapes) != 1:
            raise ApaError(f"EuroSAT images in {dataset.root} differ in size ({sorted(shapes)}); expected 3x64x64.")
        images, labels = torch.stack(images), torch.tensor(dataset.targets, dtype=torch.long)
        self._check(images, self.classes)
        base = Path(dataset.root) / "eurosat" / "2750"
        self.files = [str(Path(path).relative_to(base)) for path, _ in dataset.samples]
        parts = stratified_split(labels, self.fractions, self.split_seed)
        self.split_indices = dict(zip(SPLITS, parts, strict=True))
        self.set_splits(*(ImageTensorDataset(images[part], labels[part]) for part in parts))
        self._write_split()

    def _write_split(self) -> None:
        """``data_split.csv`` (split, file, label) in ``split_dir``, written by the global-zero process only."""
        trainer = getattr(self, "trainer", None)
        if self.split_dir is None or (trainer is not None and not trainer.is_global_zero):
            return
        write_split_csv(
            self.split_dir / "data_split.csv",
            (
                [split, self.files[index], self.classes[label]]
                for split, indices in self.split_indices.items()
                for index, label in zip(indices.tolist(), getattr(self, f"{split}_set").labels.tolist(), strict=True)
            ),
        )
