"""Datasets small enough to keep decoded in memory, served a whole batch at a time."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from apa_lightning.cli.config_checks import AUGMENT_ON, check_on_device
from apa_lightning.data.augmentation import BatchAugmentation
from apa_lightning.errors import ApaError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORMALIZATIONS = ("none", "dataset", "imagenet", "fixed")


class ImageTensorDataset(Dataset):
    """uint8 images ``(N, C, H, W)`` with int64 labels.

    Without ``transform`` a batch is one tensor index, not N PIL decodes; with it (augmentation, on uint8
    tensors) each image is transformed on its own and the results are stacked.
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor] | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"expected uint8 (N, C, H, W) images with N labels, got {tuple(images.shape)}")
        self.images, self.labels, self.transform = images, labels.long(), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices)
        images = self.images[index]
        if self.transform:
            images = torch.stack([self.transform(image) for image in images])
        return images, self.labels[index]


class EpochShuffle(Sampler[int]):
    """A permutation of ``range(n)`` that depends only on ``seed`` and the epoch (Lightning calls ``set_epoch``
    before each epoch), so a resumed run sees the same order in epoch k as a run that never stopped.

    ``generator``, reseeded with the epoch too, is for the DataLoader: it draws the workers' seeds from it instead
    of from torch's global generator, whose state at that moment differs between a new and a resumed process.
    """

    def __init__(self, n: int, seed: int, epoch: int = 0) -> None:
        self.n, self.seed = n, seed
        self.generator = torch.Generator()
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.manual_seed(self.seed + epoch)

    def __len__(self) -> int:
        return self.n

    def permutation(self) -> Tensor:
        """This epoch's order, as a tensor."""
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation().tolist())


class DeviceBatches:
    """Batches of uint8 images and labels that already lie on the training device, drawn there without a
    DataLoader: one index per batch, no worker and no host-to-device copy.

    Lightning takes any sized iterable as a dataloader and calls ``sampler.set_epoch`` before each epoch: with an
    ``EpochShuffle`` the order is that of the DataLoader path for the same seed and epoch; ``shuffle`` without a
    sampler (an unseeded run) draws it from torch's generator of the device; without ``shuffle`` (validation,
    test) the batches keep the stored order.
    """

    batch_sampler = None  # Lightning looks here, then at ``sampler``, for ``set_epoch``

    def __init__(
        self, images: Tensor, labels: Tensor, batch_size: int, shuffle: bool, sampler: EpochShuffle | None = None
    ) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.shuffle, self.sampler = shuffle, sampler

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        device, n = self.images.device, len(self.images)
        if self.sampler is not None:
            order = self.sampler.permutation().to(device)  # one small copy per epoch
        elif self.shuffle:
            order = torch.randperm(n, device=device)
        else:
            order = None
        for start in range(0, n, self.batch_size):
            if order is None:
                yield self.images[start : start + self.batch_size], self.labels[start : start + self.batch_size]
            else:
                index = order[start : start + self.batch_size]
                yield self.images[index], self.labels[index]


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """``__getitems__`` already returns the batch; nothing is left to collate."""
    return batch


def seeded_split(n: int, sizes: Sequence[int], seed: int) -> list[Tensor]:
    """Index tensors for consecutive parts of a seeded permutation of ``range(n)``; the rest is the last part."""
    if sum(sizes) >= n:
        raise ApaError(
            f"split sizes {list(sizes)} (data.val_size, data.test_size) leave no training data out of {n} images; "
            "make them smaller."
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts, start = [], 0
    for size in sizes:
        parts.append(order[start : start + size])
        start += size
    parts.append(order[start:])
    return parts


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images ``(N, C, H, W)``, in [0, 1] units."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for part in images.split(chunk):
        values = part.double().div_(255)
        total += values.sum(dim=(0, 2, 3))
        squares += values.pow_(2).sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    return mean.tolist(), (squares / count - mean.pow(2)).clamp_min(0).sqrt().tolist()


def check_fixed_stats(
    normalize: str, mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` as lists for ``normalize="fixed"``, None for the other modes. Raises ApaError when
    ``fixed`` lacks them or they do not hold one number per channel (std above 0), and when another mode is
    given them (they would be ignored)."""
    given = [f"data.{name}" for name, value in (("mean", mean), ("std", std)) if value is not None]
    if normalize != "fixed":
        if given:
            raise ApaError(
                f"{' and '.join(given)} only apply with data.normalize=fixed, but data.normalize={normalize}; "
                f"add data.normalize=fixed to use them, or drop {' and '.join(given)}."
            )
        return None
    # the VGG16 report's values for colour images; '+': a data config without these keys (all but cifar10's)
    example = (
        "+data.mean=[0.4915,0.4823,0.4468] +data.std=[0.2470,0.2435,0.2616]"
        if channels == 3
        else f"+data.mean=[{','.join(['0.5'] * channels)}] +data.std=[{','.join(['0.25'] * channels)}]"
    )
    if mean is None or std is None:
        raise ApaError(
            f"data.normalize=fixed needs data.mean and data.std, one number per channel ({channels}); e.g. {example} "
            "(without the + where the data config already has the keys)."
        )
    try:
        stats = [float(v) for v in mean], [float(v) for v in std]
    except (TypeError, ValueError):  # a single number, or text
        stats = None
    finite = stats is not None and all(math.isfinite(v) for v in stats[0] + stats[1])
    if not finite or len(stats[0]) != channels or len(stats[1]) != channels or min(stats[1]) <= 0:
        raise ApaError(
            f"data.mean={mean} and data.std={std} need {channels} finite numbers each (data.channels={channels}), "
            f"every std above 0; e.g. {example}."
        )
    return stats


class InMemoryImageDataModule(L.LightningDataModule):
    """Base for image sets held as uint8 tensors.

    Batches travel to the device as uint8 and become float images there: in [0, 1], resized to ``image_size``
    and repeated to ``channels`` (1 -> 3) when those differ from the stored images, then normalised by
    ``normalize``: ``none``, ``dataset`` (the training split's per-channel mean and std), ``imagenet``, or
    ``fixed`` (the given ``mean`` and ``std``, one number per channel, e.g. a report's published values).
    ``augmentation`` names ``_target_`` configs of torchvision v2 transforms, applied in order to the training
    images only (a null entry is switched off): with ``augment_on="device"`` to the whole float batch in [0, 1]
    after it reached the device, before resizing to ``image_size`` and normalising (``BatchAugmentation``, each
    image with its own random parameters); with ``"workers"`` to each uint8 image on the loader's workers.
    ``on_device=True`` keeps the three splits on the trainer's device and serves ``DeviceBatches`` instead of
    DataLoaders (one process, one device, no workers: an augmentation needs ``augment_on="device"`` there).
    Subclasses call ``set_splits`` and set ``classes`` in ``setup``.
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        image_size: int = 28,
        channels: int = 1,
        num_classes: int = 10,
        normalize: str = "none",
        augmentation: dict[str, dict[str, Any] | None] | None = None,
        pin_memory: bool = False,
        augment_on: str = "device",
        on_device: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ApaError(f"data.batch_size must be at least 1, got {batch_size}.")
        if normalize not in NORMALIZATIONS:
            raise ApaError(f"data.normalize={normalize!r}; use one of {', '.join(NORMALIZATIONS)}.")
        if normalize == "imagenet" and channels != 3:
            raise ApaError(f"data.normalize=imagenet needs data.channels=3 (got {channels}).")
        self.fixed_stats = check_fixed_stats(normalize, mean, std, channels)
        if augment_on not in AUGMENT_ON:
            raise ApaError(f"data.augment_on={augment_on!r}; use one of {', '.join(AUGMENT_ON)}.")
        # _convert_: torchvision wants plain lists (RandomCrop's padding=[4, 2])
        steps = {name: instantiate(t, _convert_="all") for name, t in (augmentation or {}).items() if t}
        if on_device:
            check_on_device(num_workers, augment_on, bool(steps))
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes
        self.normalize, self.augment_on, self.on_device = normalize, augment_on, on_device
        on_workers = bool(steps) and augment_on == "workers"
        self.train_transform = v2.Compose(list(steps.values())) if on_workers else None
        self.batch_augmentation = BatchAugmentation(steps) if steps and not on_workers else None
        self._device_splits: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}
        self._stats: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}
        self.train_set: ImageTensorDataset | None = None
        self.val_set: ImageTensorDataset | None = None
        self.test_set: ImageTensorDataset | None = None
        self.classes: list[str] = []
        self.mean: list[float] | None = None
        self.std: list[float] | None = None

    def batch_images(self, batch: tuple[Tensor, ...]) -> int:
        """How many images ``batch`` (images and labels, as the model receives it) holds; the Throughput callback
        counts training images with it."""
        return len(batch[0])

    def _check(self, images: Tensor, classes: Sequence[str]) -> None:
        """Raise ApaError when the configured channels or class count cannot serve these images."""
        stored = images.shape[1]
        if self.channels != stored and not (stored == 1 and self.channels == 3):
            hint = " (or 3 to repeat the grey channel)." if stored == 1 else "."
            raise ApaError(
                f"{type(self).__name__} stores {stored}-channel images but data.channels={self.channels}; "
                f"use data.channels={stored}{hint}"
            )
        if self.num_classes != len(classes):
            raise ApaError(
                f"{type(self).__name__} has {len(classes)} classes but data.num_classes={self.num_classes}; "
                f"set data.num_classes={len(classes)}."
            )

    def set_splits(self, train: ImageTensorDataset, val: ImageTensorDataset, test: ImageTensorDataset) -> None:
        """Install the three splits; the training split gets the augmentation and defines ``dataset`` stats."""
        train.transform = self.train_transform
        self.train_set, self.val_set, self.test_set = train, val, test
        if self.normalize == "dataset":
            self.mean, self.std = channel_stats(train.images)
            if len(self.mean) != self.channels:  # grey images repeated to RGB
                self.mean, self.std = self.mean * self.channels, self.std * self.channels
        elif self.normalize == "imagenet":
            self.mean, self.std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        elif self.normalize == "fixed":
            self.mean, self.std = self.fixed_stats

    def state_dict(self) -> dict[str, Any]:
        """What Lightning saves in checkpoints (under this class's name) so ``task=predict`` needs no dataset: the
        class names and the normalisation's per-channel mean and std (None without normalisation)."""
        return {"classes": list(self.classes), "mean": self.mean, "std": self.std}

    def _loader(self, dataset: ImageTensorDataset | None, shuffle: bool) -> DataLoader | DeviceBatches:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not run")
        sampler = self._epoch_shuffle(len(dataset)) if shuffle else None
        if self.on_device:
            images, labels = self._on_trainer_device(dataset)
            return DeviceBatches(images, labels, self.batch_size, shuffle, sampler)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=shuffle and sampler is None,
            generator=sampler.generator if sampler else None,
            num_workers=self.num_workers,
            collate_fn=keep_batch,
            pin_memory=self.pin_memory,
            # training workers restart every epoch, seeded from (seed, epoch): see EpochShuffle
            persistent_workers=self.num_workers > 0 and sampler is None,
        )

    def _on_trainer_device(self, dataset: ImageTensorDataset) -> tuple[Tensor, Tensor]:
        """The split's images and labels on the trainer's device (the CPU without a trainer), copied once."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.world_size > 1:
            raise ApaError(
                f"data.on_device=true serves one process on one device, but this run has {trainer.world_size} "
                "(DDP); set data.on_device=false so that Lightning's distributed sampler splits the data."
            )
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        key = (id(dataset), str(device))  # the splits live as long as the datamodule
        if key not in self._device_splits:
            self._device_splits[key] = dataset.images.to(device), dataset.labels.to(device)
        return self._device_splits[key]

    def _epoch_shuffle(self, n: int) -> EpochShuffle | None:
        """The seeded per-epoch order of a seeded run (``seed_everything`` sets PL_GLOBAL_SEED, in every DDP rank
        too), starting at the epoch the trainer is at: Lightning may fetch from a new loader before it calls
        ``set_epoch``. None in an unseeded run, which shuffles as torch does."""
        seed = os.environ.get("PL_GLOBAL_SEED")
        if seed is None:
            return None
        trainer = getattr(self, "trainer", None)
        # Private: Lightning's count of finished epochs. The public trainer.current_epoch lags one behind it when a
        # resumed run makes its loader (Lightning counts the checkpoint's last epoch as completed only afterwards),
        # and set_epoch may come after the first fetch (above). tests/test_library_contracts.py pins it.
        epoch = trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0
        return EpochShuffle(n, int(seed), epoch)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.test_set, shuffle=False)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels = batch
        trainer = getattr(self, "trainer", None)
        # only training batches are augmented: Lightning also calls this for validation, test and the sanity check
        return self.float_images(images, augment=trainer is not None and trainer.training), labels

    def float_images(self, images: Tensor, augment: bool = False) -> Tensor:
        """A uint8 batch as the float images the model sees: in [0, 1], augmented (``augment`` and an
        ``augment_on="device"`` recipe), resized to ``image_size``, repeated to ``channels``, normalised."""
        images = images.float().div_(255)
        if augment and self.batch_augmentation is not None:
            images = self.batch_augmentation(images)  # colour jitter needs [0, 1]: before normalising
        if images.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True)
        if images.shape[1] != self.channels:
            # a real copy: expand's stride-0 view breaks code that calls .view() on it (torchmetrics' SSIM)
            images = images.repeat(1, self.channels, 1, 1)
        if self.mean is not None:
            mean, std = self._stats_on(images.device)
            images = (images - mean) / std
        return images

    def _stats_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """``mean`` and ``std`` as ``(1, C, 1, 1)`` tensors on ``device``, made once per device and values: a
        ``torch.tensor(..., device=cuda)`` per batch would wait for the GPU each time."""
        key = (str(device), tuple(self.mean), tuple(self.std))
        if key not in self._stats:
            self._stats[key] = tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (self.mean, self.std))
        return self._stats[key]
