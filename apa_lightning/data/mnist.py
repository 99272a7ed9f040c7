"""MNIST and Fashion-MNIST through torchvision, with an offline import of the IDX files."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torchvision import datasets

from apa_lightning.data.torchvision_sets import TorchvisionDataModule
from apa_lightning.errors import ApaError
from apa_lightning.runs.files import write_atomically

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IMAGE_SIZE = 28  # MNIST and Fashion-MNIST images are 28x28
CHUNK = 1 << 20


class UnreadableStream(ValueError):
    """A stream that fails while being read: a truncated or corrupt compressed file."""


def read_chunk(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes of ``stream``; raises UnreadableStream when reading (decompressing) fails."""
    try:
        return stream.read(size)
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableStream(str(exc)) from exc


def idx_dimensions(name: str) -> int:
    """How many dimensions the IDX file ``name`` has: 3 for images (N, 28, 28), 1 for labels (N)."""
    return 3 if "-images-" in name else 1


def read_idx_header(stream: BinaryIO, ndim: int) -> tuple[bytes, tuple[int, ...]]:
    """The raw header of a uint8 IDX stream with ``ndim`` dimensions and the dimensions it declares.

    Raises ValueError saying what is wrong with the magic number or the dimensions.
    """
    magic = read_chunk(stream, 4)
    expected = bytes([0, 0, 0x08, ndim])
    if magic != expected:
        raise ValueError(f"its magic number is {magic.hex() or 'missing'}, not {expected.hex()} (uint8, {ndim}-D)")
    raw_dims = read_chunk(stream, 4 * ndim)
    if len(raw_dims) != 4 * ndim:
        raise ValueError("it ends inside its header")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    if ndim == 3 and dims[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"it holds {dims[1]}x{dims[2]} images, not {IMAGE_SIZE}x{IMAGE_SIZE}")
    return magic + raw_dims, dims


def copy_idx(source: BinaryIO, target: BinaryIO, ndim: int) -> tuple[int, ...]:
    """Copy a uint8 IDX stream, checking its header and that its length fits its dimensions; returns them.

    Raises ValueError (UnreadableStream when reading fails) saying what is wrong.
    """
    header, dims = read_idx_header(source, ndim)
    target.write(header)
    expected, copied = math.prod(dims), 0
    while chunk := read_chunk(source, CHUNK):
        copied += len(chunk)
        target.write(chunk)
    if copied != expected:
        raise ValueError(f"its header declares {'x'.join(map(str, dims))} values but {copied} bytes follow it")
    return dims


def check_idx_file(path: Path) -> tuple[int, ...]:
    """The dimensions of the uint8 IDX file ``path`` after checking its header and size (the data is not read).

    Raises ApaError naming the file, what is wrong and the way out.
    """
    ndim = idx_dimensions(path.name)
    try:
        with open(path, "rb") as f:
            header, dims = read_idx_header(f, ndim)
        if path.stat().st_size != len(header) + math.prod(dims):
            raise ValueError(f"its size is {path.stat().st_size} bytes, not {len(header) + math.prod(dims)}")
    except ValueError as exc:
        raise ApaError(
            f"{path} is not a valid MNIST IDX file: {exc}. Delete it and import or download it again "
            "(data.source_dir or data.download=true)."
        ) from None
    return dims


def check_split(images: Path, labels: Path) -> None:
    """Check both IDX files of a split; raises ApaError when one is bad or they differ in count."""
    n_images, n_labels = check_idx_file(images)[0], check_idx_file(labels)[0]
    if n_images != n_labels:
        raise ApaError(
            f"{images} holds {n_images} images but {labels} holds {n_labels} labels; the two files come from "
            "different datasets. Delete both and import or download them again."
        )


def import_idx_file(source: Path, target: Path) -> None:
    """Decompress (``.gz``) or copy ``source`` to ``target`` through a temporary file of this process, checking
    the IDX header and size on the way; ``target`` appears whole or not at all.

    Raises ApaError naming ``source`` when it is not a readable gzip file or not a valid IDX file.
    """
    opener = gzip.open if source.suffix == ".gz" else open
    try:
        with opener(source, "rb") as stream:
            write_atomically(target, lambda f: copy_idx(stream, f, idx_dimensions(target.name)))
    except UnreadableStream as exc:
        raise ApaError(
            f"data.source_dir file {source} cannot be read ({exc}); it is truncated or corrupt. Replace it with "
            f"a good copy of {source.name}."
        ) from None
    except ValueError as exc:
        raise ApaError(
            f"data.source_dir file {source} is not a valid MNIST IDX file: {exc}. Replace it with a good copy "
            f"of {source.name}."
        ) from None


def import_idx_files(source_dir: str | Path, raw_dir: str | Path) -> None:
    """Copy the four IDX files from ``source_dir`` (``.gz`` or uncompressed) into torchvision's ``raw_dir``;
    a file already there is kept when it is valid. Safe when several processes import at once.

    Raises ApaError naming the missing files when ``source_dir`` does not hold all four, and naming the file
    when one is corrupt, truncated or not MNIST's IDX format (it is then not kept in ``raw_dir``).
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
        try:
            check_idx_file(raw / name)
        except (ApaError, FileNotFoundError):  # absent, or bad from an earlier import: import it (again)
            import_idx_file(path, raw / name)
    for images, labels in (IDX_FILES[:2], IDX_FILES[2:]):
        n_images, n_labels = check_idx_file(raw / images)[0], check_idx_file(raw / labels)[0]
        if n_images != n_labels:  # files of two different datasets: keep neither
            (raw / images).unlink(missing_ok=True)
            (raw / labels).unlink(missing_ok=True)
            raise ApaError(
                f"data.source_dir files {found[images]} ({n_images} images) and {found[labels]} ({n_labels} "
                "labels) do not belong together; replace them with the matching pair."
            )


class MNISTDataModule(TorchvisionDataModule):
    """torchvision MNIST: by default 48,000 train / 12,000 validation (seeded) and the official 10,000 test.

    ``source_dir``, when set, is a folder with the four IDX files that ``prepare_data`` imports instead of
    downloading (for machines without internet).
    """

    stored_channels = 1  # task=predict reads images in this many channels (data.channels=3 repeats grey)
    stored_size = IMAGE_SIZE  # task=predict reads images at this size, then resizes them as training does

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

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        names = IDX_FILES[:2] if train else IDX_FILES[2:]
        images, labels = (self.raw_dir / name for name in names)
        if images.is_file() and labels.is_file():  # else torchvision's missing-data error says it
            check_split(images, labels)
        return super()._load(train)

    def _arrays(self, dataset: datasets.MNIST) -> tuple[torch.Tensor, torch.Tensor]:
        return dataset.data.unsqueeze(1), dataset.targets


class FashionMNISTDataModule(MNISTDataModule):
    """torchvision Fashion-MNIST with the same split as MNIST."""

    dataset_class = datasets.FashionMNIST
