"""A convolutional autoencoder whose code is a small dense vector, for exploring the latent space."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from apa_lightning.nets.blocks import conv_bn_elu, deconv_bn_elu


class ConvDenseAutoencoder(nn.Module):
    """Strided conv encoder to a ``latent_dim`` vector, mirrored decoder back to the image.

    encoder: per width in ``hidden_channels`` Conv(s2) + BN + ELU (each halves the image), Flatten,
             Linear -> latent_dim
    decoder: Linear + ELU, Unflatten, per width in reverse ConvT(s2) + BN + ELU, ConvT(s2) to the image
    The output lies in ``value_range``: ``low + (high - low) * sigmoid`` (for [-1, 1] that is tanh(h / 2)).
    Square images of any ``image_size``: each block rounds the size up, the decoder crops back to it.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 32,
        latent_dim: int = 6,
        hidden_channels: Sequence[int] = (32, 64, 128),
        value_range: Sequence[float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        self.latent_dim, self.image_size = latent_dim, image_size
        self.low, self.high = float(value_range[0]), float(value_range[1])
        widths = [in_channels, *hidden_channels]
        side = image_size
        for _ in hidden_channels:
            side = (side + 1) // 2  # a stride-2 convolution with padding 1
        self.encoder = nn.Sequential(
            *(conv_bn_elu(a, b, stride=2) for a, b in zip(widths[:-1], widths[1:], strict=True)),
            nn.Flatten(),
            nn.Linear(widths[-1] * side * side, latent_dim),
        )
        reversed_widths = widths[::-1]
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, widths[-1] * side * side),
            nn.ELU(),
            nn.Unflatten(1, (widths[-1], side, side)),
            *(deconv_bn_elu(a, b, stride=2) for a, b in zip(reversed_widths[:-2], reversed_widths[1:-1], strict=True)),
            nn.ConvTranspose2d(widths[1], in_channels, kernel_size=3, stride=2, padding=1, output_padding=1),
        )

    def encode(self, x: Tensor) -> Tensor:
        """The codes ``(N, latent_dim)`` of images ``x``."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Images in ``value_range`` for codes ``z``."""
        images = self.decoder(z)[..., : self.image_size, : self.image_size]
        return self.low + (self.high - self.low) * torch.sigmoid(images)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))
