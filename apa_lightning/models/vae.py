"""Variational autoencoder training."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor

from apa_lightning.errors import ApaError
from apa_lightning.models.base import FAST_PATH_ARGS
from apa_lightning.models.reconstruction import ReconstructionModule

RECONSTRUCTION_LOSSES = ("bce", "mse")


def vae_loss(
    logits: Tensor, x: Tensor, mu: Tensor, logvar: Tensor, beta: float = 1.0, reconstruction: str = "bce"
) -> dict[str, Tensor]:
    """Batch means of the VAE terms.

    recon: per image, BCE of ``sigmoid(logits)`` to ``x`` (or squared error) summed over pixels;
    kl: analytic KL(N(mu, sigma^2) || N(0, I)) summed over latent dimensions;
    loss: recon + beta * kl; elbo: -(recon + kl).
    """
    if reconstruction == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    else:
        per_pixel = F.mse_loss(torch.sigmoid(logits), x, reduction="none")
    recon = per_pixel.flatten(1).sum(1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    return {"loss": (recon + beta * kl).mean(), "recon": recon.mean(), "kl": kl.mean(), "elbo": -(recon + kl).mean()}


class VAEModule(ReconstructionModule):
    """Trains a VAE network (``encode``/``decode``/``forward`` like ``ConvVAE``) on recon + beta * KL.

    Logs ``<split>/loss``, ``recon``, ``kl`` and ``elbo``, and MSE/PSNR/SSIM of the reconstructions.
    """

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        beta: float = 1.0,
        reconstruction_loss: str = "bce",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(channels_last, compile)
        self.save_hyperparameters(ignore=FAST_PATH_ARGS)
        if reconstruction_loss not in RECONSTRUCTION_LOSSES:
            raise ApaError(f"model.reconstruction_loss={reconstruction_loss!r}; use one of {RECONSTRUCTION_LOSSES}.")
        if beta < 0:
            raise ApaError(f"model.beta={beta} must be non-negative.")
        self.net = instantiate(net)

    @property
    def latent_dim(self) -> int:
        return self.net.latent_dim

    @property
    def loss_kind(self) -> str:
        """What ``<split>/loss`` is, for TensorBoard's tag ``<split>/loss_<kind>``: the negative ELBO (with β) over
        a reconstruction term of ``bce`` or ``mse``."""
        return f"elbo_{self.hparams.reconstruction_loss}"

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> tuple[Tensor, Tensor]:
        x, _ = batch
        logits, mu, logvar = self.net(x)
        terms = vae_loss(logits, x, mu, logvar, self.hparams.beta, self.hparams.reconstruction_loss)
        values = {f"{split}/{name}": value for name, value in terms.items()}
        if split == "train":
            self.log_training(values, len(x))
        else:
            self.log_dict(values, on_step=False, on_epoch=True, sync_dist=True)
        return terms["loss"], torch.sigmoid(logits)

    def encode(self, x: Tensor) -> Tensor:
        """The posterior means ``(N, latent_dim)``."""
        return self.net.encode(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Images in [0, 1] for latent codes ``z``."""
        return torch.sigmoid(self.net.decode(z))

    def grid_rows(self, x: Tensor) -> dict[str, Tensor]:
        """input | reconstruction from the posterior means."""
        return {"input": x, "reconstruction": self.decode(self.encode(x))}

    def sample(self, n: int) -> Tensor:
        """``n`` images decoded from z ~ N(0, I)."""
        return self.decode(torch.randn(n, self.latent_dim, device=self.device))

    def interpolate(self, a: Tensor, b: Tensor, steps: int) -> Tensor:
        """``steps`` images decoded along the straight line between the codes of images ``a`` and ``b``."""
        mu = self.encode(torch.stack([a, b]))
        t = torch.linspace(0, 1, steps, device=mu.device).unsqueeze(1)
        return self.decode((1 - t) * mu[0] + t * mu[1])
