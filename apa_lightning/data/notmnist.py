"""notMNIST: the letters A-J as 28x28 greyscale PNGs in one folder per letter, with a seeded stratified split."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.io import ImageReadMode, decode_image

from apa_lightning.data.in_memory import ImageTensorDataset, InMemoryImageDataModule
from apa_lightning.data.splits import SPLITS, stratified_split, write_split_csv
from apa_lightning.errors import ApaError

log = logging.getLogger(__name__)

LETTERS = tuple("ABCDEFGHIJ")
VARIANTS = ("auto", "small", "large")
IMAGE_SHAPE = (1, 28, 28)


def decode_folder(paths: Sequence[Path]) -> tuple[torch.Tensor, list[int]]:
    """The images of ``paths`` as uint8 ``(N, 1, 28, 28)`` (grey, in order) and the positions of the files
    that are not a readable 28x28 image (empty, corrupt or of another size), which are left out."""
    images = torch.empty((len(paths), *IMAGE_SHAPE), dtype=torch.uint8)
    kept, bad = 0, []
    for position, path in enumerate(paths):
        try:
            image = decode_image(str(path), mode=ImageReadMode.GRAY)
        except RuntimeError:  # torchvision's error for an empty or truncated file
            image = None
        if image is None or tuple(image.shape) != IMAGE_SHAPE:
            bad.append(position)
            continue
        images[kept] = image
        kept += 1
    return images[:kept], bad


class NotMNISTDataModule(InMemoryImageDataModule):
    """notMNIST (Yaroslav Bulatov's letters A-J in many fonts), decoded once into memory as uint8 (N, 1, 28, 28).

    ``data_dir`` holds the class folders ``A/`` ... ``J/`` of PNG images, or the extracted archives
    ``notMNIST_small/`` and/or ``notMNIST_large/``: ``variant`` picks one (``auto``: large when both are there).
    Unreadable files (the public archives contain empty and corrupt ones) are left out with one warning that
    counts them. ``sizes`` (train, validation, test; the lecture's 42,000 / 18,000 / 10,000) are drawn per
    letter with ``split_seed`` when the folder holds enough readable images, else the readable images are split
    in the same proportions. The file list of each part, in the order served, goes to ``<split_dir>/data_split.csv``.
    """

    stored_channels = 1  # task=predict reads images in this many channels (data.channels=3 repeats grey)
    stored_size = IMAGE_SHAPE[-1]  # task=predict reads images at this size, then resizes them as training does

    def __init__(
        self,
        data_dir: str = "data",
        variant: str = "auto",
        sizes: Sequence[int] = (42000, 18000, 10000),
        split_seed: int = 42,
        split_dir: str | None = None,
        image_size: int = 28,
        channels: int = 1,
        num_classes: int = 10,
        normalize: str = "none",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            image_size=image_size, channels=channels, num_classes=num_classes, normalize=normalize, **kwargs
        )
        self.save_hyperparameters()
        if variant not in VARIANTS:
            raise ApaError(f"data.variant={variant!r}; use one of {', '.join(VARIANTS)}.")
        if len(sizes) != 3 or any(int(s) != s or s < 1 for s in sizes):
            raise ApaError(f"data.sizes={list(sizes)} must be three positive image counts (train, validation, test).")
        self.data_dir, self.variant = Path(data_dir).expanduser().resolve(), variant
        self.sizes, self.split_seed = [int(s) for s in sizes], split_seed
        self.split_dir = Path(split_dir) if split_dir else None
        self.files: list[str] = []

    def _missing_message(self, problem: str) -> str:
        return (
            f"{problem} torchvision cannot download notMNIST: get notMNIST_small.tar.gz (18,724 images) or "
            "notMNIST_large.tar.gz (about 530,000) of Yaroslav Bulatov's notMNIST dataset "
            "(http://yaroslavvb.com/upload/notMNIST/) and extract it into data.data_dir "
            f"(tar xzf notMNIST_small.tar.gz -C {self.data_dir}), so that {self.data_dir}/notMNIST_small/A/ ... J/ "
            "hold the PNG images; or set data.data_dir to a folder that holds the letter folders A/ ... J/ itself."
        )

    def letters_dir(self) -> Path:
        """The folder holding ``A/`` ... ``J/``. Raises ApaError when there is none or letters are missing."""
        archives = {name: self.data_dir / f"notMNIST_{name}" for name in ("large", "small")}
        if any((self.data_dir / letter).is_dir() for letter in LETTERS):
            root = self.data_dir
        elif self.variant == "auto":
            root = next((path for path in archives.values() if path.is_dir()), None)
        else:
            root = archives[self.variant] if archives[self.variant].is_dir() else None
        if root is None:
            wanted = "notMNIST_small/ or notMNIST_large/" if self.variant == "auto" else f"notMNIST_{self.variant}/"
            raise ApaError(self._missing_message(f"notMNIST is not in {self.data_dir} (no A/ ... J/ nor {wanted})."))
        missing = [letter for letter in LETTERS if not (root / letter).is_dir()]
        if missing:
            raise ApaError(self._missing_message(f"notMNIST in {root} lacks the letter folders {', '.join(missing)}."))
        return root

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        root = self.letters_dir()
        paths, labels = [], []
        for label, letter in enumerate(LETTERS):
            # hidden files are the file manager's (.DS_Store), not images
            files = sorted(p for p in (root / letter).iterdir() if p.is_file() and not p.name.startswith("."))
            paths += files
            labels += [label] * len(files)
        log.info("Decoding %d notMNIST files from %s", len(paths), root)
        images, bad = decode_folder(paths)
        if bad:
            examples = ", ".join(str(paths[i].relative_to(root)) for i in bad[:3])
            log.warning(
                "notMNIST: skipped %d of %d files in %s that are not readable 28x28 images (empty or corrupt), "
                "e.g. %s.",
                len(bad),
                len(paths),
                root,
                examples,
            )
        bad_set = set(bad)
        readable = [i for i in range(len(paths)) if i not in bad_set]
        self.files = [str(paths[i].relative_to(root)) for i in readable]
        labels = torch.tensor([labels[i] for i in readable], dtype=torch.long)
        empty = [letter for label, letter in enumerate(LETTERS) if not (labels == label).any()]
        if empty:
            raise ApaError(f"notMNIST in {root}: the folders {', '.join(empty)} hold no readable 28x28 image.")
        self.classes = list(LETTERS)
        self._check(images, self.classes)
        fractions = [size / sum(self.sizes) for size in self.sizes]
        parts = stratified_split(labels, fractions, self.split_seed, limit=sum(self.sizes))
        if any(len(part) == 0 for part in parts):
            raise ApaError(
                f"notMNIST in {root} has only {len(labels)} readable images: too few for a train, validation and "
                f"test part in the proportions of data.sizes={self.sizes}."
            )
        if len(labels) < sum(self.sizes):
            log.info(
                "notMNIST: %d readable images, fewer than data.sizes=%s: split in proportion, %s.",
                len(labels),
                self.sizes,
                " / ".join(str(len(part)) for part in parts),
            )
        # the files are grouped by letter: serve each part in a seeded mixed order, so that every validation
        # batch (and the picture grid drawn from the first one) holds all letters
        generator = torch.Generator().manual_seed(self.split_seed)
        parts = [part[torch.randperm(len(part), generator=generator)] for part in parts]
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
                [split, self.files[index], LETTERS[label]]
                for split, indices in self.split_indices.items()
                for index, label in zip(indices.tolist(), getattr(self, f"{split}_set").labels.tolist(), strict=True)
            ),
        )
