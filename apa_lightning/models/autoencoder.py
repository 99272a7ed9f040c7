"""Autoencoder and denoising autoencoder training."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn

from apa_lightning.errors import ApaError
from apa_lightning.metrics.wrong_pixels import wrong_pixel_metrics
from apa_lightning.models.base import FAST_PATH_ARGS
from apa_lightning.models.noise import check_noise, corrupt
from apa_lightning.models.reconstruction import ReconstructionModule, image_quality_metrics

RECONSTRUCTION_LOSSES = {"mse": F.mse_loss, "bce": F.binary_cross_entropy}


class AutoencoderModule(ReconstructionModule):
    """Trains ``net`` (image -> image in ``value_range``, default [0, 1]) with MSE (or BCE) to its input.

    With ``noise`` it is a denoising autoencoder: the input is corrupted, the target stays clean, and the
    test additionally scores reconstructions of inputs corrupted at each of ``test_noise_levels``
    (``test/noise<level>/psnr``) next to the corrupted inputs themselves (``test/noise<level>/input_psnr``).
    ``net``, ``optimizer`` and ``scheduler`` are ``_target_`` configs, kept as plain values in checkpoints.

    ``reconstruction_loss="bce"`` trains with binary cross-entropy instead of MSE (outputs in [0, 1]).
    ``wrong_pixel_threshold`` marks binary images: validation and test log MSE and the largest and mean
    number of pixels per image that are wrong after thresholding the output (``test/max_wrong_pixels``,
    ``test/noise0.1/input_mean_wrong_pixels``) instead of PSNR and SSIM. ``manual_optimization=true`` takes
    one optimizer step per mini-batch of a batch that carries several passes over a small set
    (``mini_batches()``, e.g. ``data=font``), through Lightning's manual optimization, and logs the mean
    training loss once per batch.
    """

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        noise: dict[str, Any] | None = None,
        test_noise_levels: Sequence[float] = (),
        value_range: Sequence[float] = (0.0, 1.0),
        reconstruction_loss: str = "mse",
        wrong_pixel_threshold: float | None = None,
        manual_optimization: bool = False,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(channels_last, compile)
        self.save_hyperparameters(ignore=FAST_PATH_ARGS)
        if len(value_range) != 2 or not value_range[0] < value_range[1]:
            raise ApaError(f"model.value_range={list(value_range)} must be two numbers [low, high] with low < high.")
        if noise:
            check_noise(**noise)
            for level in test_noise_levels:
                check_noise(noise["kind"], level)
        elif test_noise_levels:
            raise ApaError("model.test_noise_levels needs model.noise (the kind of noise to test with); use model=dae.")
        self._check_training_options(net, scheduler, reconstruction_loss, manual_optimization)
        self.automatic_optimization = not manual_optimization
        self.net = instantiate(net)
        self.noise = noise
        metrics = image_quality_metrics
        if wrong_pixel_threshold is not None:  # binary images: wrong pixels instead of PSNR and SSIM
            metrics = partial(wrong_pixel_metrics, threshold=wrong_pixel_threshold)
            self.val_metrics, self.test_metrics = metrics("val/"), metrics("test/")
        self.test_noise_metrics = nn.ModuleList(
            nn.ModuleList([metrics(f"test/noise{lvl}/"), metrics(f"test/noise{lvl}/input_")])
            for lvl in test_noise_levels
        )

    def _check_training_options(
        self, net: dict[str, Any], scheduler: dict[str, Any] | None, loss: str, manual_optimization: bool
    ) -> None:
        if loss not in RECONSTRUCTION_LOSSES:
            raise ApaError(f"model.reconstruction_loss={loss!r}; use one of {', '.join(RECONSTRUCTION_LOSSES)}.")
        if loss == "bce" and (self.value_range != (0.0, 1.0) or net.get("output_activation", "sigmoid") != "sigmoid"):
            raise ApaError(
                "model.reconstruction_loss=bce needs outputs in [0, 1]: keep model.value_range=[0, 1] and "
                "model.net.output_activation=sigmoid, or use model.reconstruction_loss=mse."
            )
        if manual_optimization and scheduler and scheduler.get("_target_", "").endswith("ReduceLROnPlateau"):
            raise ApaError(
                "model.manual_optimization=true steps its scheduler itself, by epoch or by step, and has no "
                "validation value to give ReduceLROnPlateau; use model/scheduler=cosine, step or onecycle."
            )
        if manual_optimization and scheduler and "total_steps" in scheduler and scheduler["total_steps"] is None:
            raise ApaError(
                "model.manual_optimization=true takes several optimizer steps per Lightning batch, which the trainer "
                "does not count; set model.scheduler.total_steps (data=font: trainer.max_epochs x data.passes x 7)."
            )

    @property
    def loss_kind(self) -> str:
        """What ``<split>/loss`` is, for TensorBoard's tag ``<split>/loss_<kind>``: ``mse`` or ``bce``."""
        return self.hparams.reconstruction_loss

    @property
    def main_metric(self) -> str:
        """The metric charted next to the loss in TensorBoard: ``psnr``, or ``mean_wrong_pixels`` for binary images."""
        return "psnr" if self.hparams.get("wrong_pixel_threshold") is None else "mean_wrong_pixels"

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def corrupt(self, x: Tensor, level: float | None = None) -> Tensor:
        """``x`` corrupted by the configured noise (at ``level`` if given); ``x`` itself without noise."""
        if not self.noise:
            return x
        level = self.noise["level"] if level is None else level
        low, high = self.value_range  # the noise kinds work on [0, 1] images
        return low + (high - low) * corrupt(self.to_unit(x), self.noise["kind"], level)

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> tuple[Tensor, Tensor]:
        x, _ = batch
        x_hat = self(self.corrupt(x))
        if x_hat.shape != x.shape:
            raise ApaError(
                f"{type(self.net).__name__} turned {tuple(x.shape[1:])} images into {tuple(x_hat.shape[1:])}; "
                "the conv autoencoder needs an even image size (set data.image_size); the 5x7 font needs the MLP "
                "autoencoder (model=mlp_ae, or experiment=font_ae)."
            )
        loss = RECONSTRUCTION_LOSSES[self.hparams.reconstruction_loss](x_hat, x)
        if split == "train":
            self.log_training({"train/loss": loss}, len(x), prog_bar=("train/loss",))
        else:
            self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss, x_hat

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self.automatic_optimization:
            return super().training_step(batch, batch_idx)
        return self._mini_batch_steps(batch)

    def _mini_batch_steps(self, batch: Any) -> Tensor:
        """Manual optimization: one optimizer step per mini-batch of a batch with ``mini_batches(inputs)``
        (inputs corrupted all at once: fresh noise for every pass; a batch that brings its own noisy ``inputs``
        is not corrupted again), or one step on a plain ``(images, labels)`` batch. Logs the training loss
        averaged over the images once; returns it."""
        if getattr(batch, "inputs", None) is not None:  # the data's own noisy copies (data.noise_levels)
            steps = batch.mini_batches()
        elif hasattr(batch, "mini_batches"):
            images = batch.images.flatten(0, 1)  # one image per row, as the noise kinds expect
            steps = batch.mini_batches(self.corrupt(images).view_as(batch.images))
        else:
            steps = [(self.corrupt(batch[0]), batch[0])]
        optimizer, loss_fn = self.optimizers(), RECONSTRUCTION_LOSSES[self.hparams.reconstruction_loss]
        scheduler = self.lr_schedulers() if (self.hparams.scheduler or {}).get("interval") == "step" else None
        total, count = torch.zeros((), device=self.device), 0
        for x_in, x in steps:
            loss = loss_fn(self(x_in), x)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.detach() * len(x)
            count += len(x)
        mean = total / count
        self.log("train/loss", mean, on_step=False, on_epoch=True, prog_bar=True, batch_size=count)
        return mean

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if not self.automatic_optimization and (self.hparams.scheduler or {}).get("interval", "epoch") == "epoch":
            scheduler = self.lr_schedulers()
            if scheduler is not None:  # manual optimization: Lightning leaves the scheduler to the module
                scheduler.step()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        x = batch[0]
        for level, (denoised, noisy) in zip(self.hparams.test_noise_levels, self.test_noise_metrics, strict=True):
            x_noisy = self.corrupt(x, level)
            denoised.update(self.to_unit(self(x_noisy)), self.to_unit(x))
            noisy.update(self.to_unit(x_noisy), self.to_unit(x))
            self.log_dict(denoised, on_step=False, on_epoch=True)
            self.log_dict(noisy, on_step=False, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        """For a net that declares ``code_shape`` and ``input_shape``: ``test/code_bits`` (the code in the
        parameters' float type) and ``test/compression_ratio`` (bits of the 8-bit input image per code bit)."""
        code_shape, input_shape = getattr(self.net, "code_shape", None), getattr(self.net, "input_shape", None)
        if code_shape and input_shape:
            code_bits = math.prod(code_shape) * torch.finfo(self.dtype).bits
            self.log("test/code_bits", float(code_bits))
            self.log("test/compression_ratio", math.prod(input_shape) * 8 / code_bits)

    def grid_rows(self, x: Tensor) -> dict[str, Tensor]:
        """input | noisy input (denoising only) | reconstruction."""
        x_in = self.corrupt(x)
        rows = {"input": x}
        if self.noise:
            rows[f"noisy input ({self.noise['kind']} {self.noise['level']:g})"] = x_in
        rows["reconstruction"] = self(x_in)
        return {label: self.to_unit(row) for label, row in rows.items()}
