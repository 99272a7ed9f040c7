"""A convolutional variational autoencoder."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from apa_lightning.nets.blocks import conv_bn_elu, deconv_bn_elu


class ConvVAE(nn.Module):
    """Strided conv encoder to (mu, log sigma^2), z = mu + eps * sigma, transposed-conv decoder to logits.

    Each of the ``hidden_channels`` blocks halves the image, so ``image_size`` must be divisible by
    ``2 ** len(hidden_channels)``. ``decode`` returns logits; ``torch.sigmoid`` of them is the image.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        latent_dim: int = 16,
        hidden_channels: Sequence[int] = (32, 64),
    ) -> None:
        super().__init__()
        factor = 2 ** len(hidden_channels)
        if image_size % factor:
            raise ValueError(f"image_size {image_size} must be divisible by {factor} for {len(hidden_channels)} blocks")
        self.latent_dim = latent_dim
        widths = [in_channels, *hidden_channels]
        self.feature_shape = (widths[-1], image_size // factor, image_size // factor)
        features = widths[-1] * (image_size // factor) ** 2

        self.encoder = nn.Sequential(
            *(conv_bn_elu(a, b, stride=2) for a, b in zip(widths[:-1], widths[1:], strict=True)), nn.Flatten()
        )
        self.to_mu = nn.Linear(features, latent_dim)
        self.to_logvar = nn.Linear(features, latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, features), nn.ELU(), nn.Unflatten(1, self.feature_shape))
        reversed_widths = widths[::-1]
        self.decoder = nn.Sequential(
            *(deconv_bn_elu(a, b, stride=2) for a, b in zip(reversed_widths[:-2], reversed_widths[1:-1], strict=True)),
            nn.ConvTranspose2d(widths[1], in_channels, kernel_size=3, stride=2, padding=1, output_padding=1),
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the posterior's mean and log-variance, each ``(N, latent_dim)``."""
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
        """z = mu + eps * sigma with eps ~ N(0, I): a sample that gradients flow through."""
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def decode(self, z: Tensor) -> Tensor:
        """Returns image logits ``(N, C, H, W)``."""
        return self.decoder(self.from_latent(z))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (reconstruction logits, mu, logvar)."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar
