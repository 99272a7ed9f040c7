"""Training speed of every run: images per second and seconds per epoch."""

from __future__ import annotations

import time

import lightning as L
import torch

from apa_lightning.data.in_memory import InMemoryImageDataModule
from apa_lightning.errors import ApaError
from apa_lightning.models.base import FastPathModule


class Throughput(L.Callback):
    """Times every training epoch and logs, at its end, ``perf/images_per_s`` (training images of all ranks per
    second of training) and ``perf/epoch_time_s`` (the whole epoch, its validation included) to every logger.
    ``images``, ``train_seconds`` and ``epoch_seconds`` add up the epochs of this process; ``summary()`` turns them
    into metrics.json's ``images_per_s`` and ``epoch_time_s``.

    Training time is counted in segments: one opens at the start of the epoch and closes when a validation starts
    (or the epoch ends); after a validation the next one opens only at the next training batch, so neither the
    validation nor what follows it (image grids, checkpoint saving in ``on_validation_end``) counts as training;
    that batch's loading and device augmentation, done before ``on_train_batch_start``, are not counted either.
    With ``model.compile`` the first training step (where torch compiles) and the time before it are left out.
    The datamodule says how many images a training batch holds (``batch_images``: data=font's hold several
    passes over the glyphs); the callback raises ApaError at setup for a datamodule or model of another kind.
    Per batch it only reads the batch's shape; it waits for the device (``torch.cuda.synchronize``) only when a
    segment ends on a CUDA device, so that queued kernels are counted in their segment. ``clock`` is the wall clock
    (a benchmark on a busy machine may count the process's CPU seconds instead)."""

    clock = staticmethod(time.perf_counter)

    def __init__(self) -> None:
        self.images, self.train_seconds, self.epoch_seconds = 0, 0.0, []
        self._epoch_start: float | None = None
        self._segment_start: float | None = None
        self._epoch_images, self._epoch_train_s = 0, 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(trainer.datamodule, InMemoryImageDataModule) or not isinstance(pl_module, FastPathModule):
            raise ApaError(
                "callbacks.throughput counts training images with the datamodule's batch_images and leaves out the "
                f"model's compile step, but the datamodule is {type(trainer.datamodule).__name__} and the model "
                f"{type(pl_module).__name__} (it needs an InMemoryImageDataModule and a FastPathModule); drop it "
                "with callbacks.throughput=null."
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._segment_start = self.clock()
        self._epoch_images, self._epoch_train_s = 0, 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if self._epoch_start is not None and self._segment_start is None:
            self._segment_start = self.clock()  # training goes on after a val_check_interval validation

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if pl_module.compiling:  # model.compile's first step compiles: not training speed
            self._end_segment(pl_module)
            self._epoch_train_s, self._segment_start = 0.0, self.clock()
            return
        self._epoch_images += trainer.datamodule.batch_images(batch) * trainer.world_size

    def _end_segment(self, pl_module: L.LightningModule) -> None:
        if self._segment_start is not None:
            device = pl_module.device
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the segment's kernels, not only their launches
            self._epoch_train_s += self.clock() - self._segment_start
            self._segment_start = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_segment(pl_module)  # a validation inside a training epoch (none during the sanity check)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_segment(pl_module)
        if self._epoch_start is None or not self._epoch_train_s or not self._epoch_images:
            return
        epoch_s = self.clock() - self._epoch_start
        self._epoch_start = None
        self.images += self._epoch_images
        self.train_seconds += self._epoch_train_s
        self.epoch_seconds.append(epoch_s)
        values = {"perf/images_per_s": self._epoch_images / self._epoch_train_s, "perf/epoch_time_s": epoch_s}
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)

    def summary(self) -> dict[str, float | None]:
        """``images_per_s`` over every epoch this process trained and the mean ``epoch_time_s`` (None before an
        epoch has finished)."""
        if not self.epoch_seconds:
            return {"images_per_s": None, "epoch_time_s": None}
        return {
            "images_per_s": round(self.images / self.train_seconds, 1),
            "epoch_time_s": round(sum(self.epoch_seconds) / len(self.epoch_seconds), 3),
        }
