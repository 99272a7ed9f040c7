"""Autoencoder and denoising autoencoder training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn

from apa_lightning.errors import ApaError
from apa_lightning.models.noise import check_noise, corrupt
from apa_lightning.models.reconstruction import ReconstructionModule, image_quality_metrics


class AutoencoderModule(ReconstructionModule):
    """Trains ``net`` (image -> image in [0, 1]) with MSE to its input.

    With ``noise`` it is a denoising autoencoder: the input is corrupted, the target stays clean, and the
    test additionally scores reconstructions of inputs corrupted at each of ``test_noise_levels``
    (``test/noise<level>/psnr``) next to the corrupted inputs themselves (``test/noise<level>/input_psnr``).
    ``net``, ``optimizer`` and ``scheduler`` are ``_target_`` configs, kept as plain values in checkpoints.
    """

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        noise: dict[str, Any] | None = None,
        test_noise_levels: Sequence[float] = (),
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if noise:
            check_noise(**noise)
            for level in test_noise_levels:
                check_noise(noise["kind"], level)
        elif test_noise_levels:
            raise ApaError("model.test_noise_levels needs model.noise (the kind of noise to test with); use model=dae.")
        self.net = instantiate(net)
        self.noise = noise
        self.test_noise_metrics = nn.ModuleList(
            nn.ModuleList(
                [image_quality_metrics(f"test/noise{lvl}/"), image_quality_metrics(f"test/noise{lvl}/input_")]
            )
            for lvl in test_noise_levels
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def corrupt(self, x: Tensor, level: float | None = None) -> Tensor:
        """``x`` corrupted by the configured noise (at ``level`` if given); ``x`` itself without noise."""
        if not self.noise:
            return x
        return corrupt(x, self.noise["kind"], self.noise["level"] if level is None else level)

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> tuple[Tensor, Tensor]:
        x, _ = batch
        x_hat = self(self.corrupt(x))
        if x_hat.shape != x.shape:
            raise ApaError(
                f"{type(self.net).__name__} turned {tuple(x.shape[1:])} images into {tuple(x_hat.shape[1:])}; "
                "the conv autoencoder needs an even image size (set data.image_size)."
            )
        loss = F.mse_loss(x_hat, x)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=split != "train")
        return loss, x_hat

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        x = batch[0]
        for level, (denoised, noisy) in zip(self.hparams.test_noise_levels, self.test_noise_metrics, strict=True):
            x_noisy = self.corrupt(x, level)
            denoised.update(self(x_noisy), x)
            noisy.update(x_noisy, x)
            self.log_dict(denoised, on_step=False, on_epoch=True)
            self.log_dict(noisy, on_step=False, on_epoch=True)

    def grid_rows(self, x: Tensor) -> list[Tensor]:
        """inputs | corrupted inputs (denoising only) | reconstructions."""
        x_in = self.corrupt(x)
        return [x, x_in, self(x_in)] if self.noise else [x, self(x)]
