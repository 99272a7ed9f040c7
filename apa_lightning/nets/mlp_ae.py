"""A symmetric fully connected autoencoder: the second course's from-scratch network, in PyTorch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from apa_lightning.errors import ApaError

ACTIVATIONS = ("tanh", "relu", "leaky_relu", "elu", "sigmoid", "identity")
INITS = ("default", "course")


def activation_layer(name: str, negative_slope: float, key: str) -> nn.Module:
    """The activation called ``name``; ``key`` names the config entry in the error for an unknown name."""
    layers = {
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "leaky_relu": lambda: nn.LeakyReLU(negative_slope),
        "elu": nn.ELU,
        "sigmoid": nn.Sigmoid,
        "identity": nn.Identity,
    }
    if name not in layers:
        raise ApaError(f"{key}={name!r} is not an activation; use one of {', '.join(ACTIVATIONS)}.")
    return layers[name]()


class MLPAutoencoder(nn.Module):
    """Flattened image -> ``hidden`` widths -> ``latent_dim`` code -> the same widths reversed -> image.

    ``hidden=[20, 10]``, ``latent_dim=2`` on 7x5 glyphs is 35-20-10-2-10-20-35. Hidden layers use
    ``activation`` (``leaky_relu`` with ``negative_slope``), the code layer ``latent_activation`` and the
    output ``output_activation`` (``sigmoid`` for images in [0, 1], or ``identity``). ``init="course"``
    draws every weight and bias as U(0, 1) * (fan_in + 1)^-1/2, the course's initialisation of a weight
    matrix with its bias row; ``"default"`` keeps PyTorch's.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        hidden: Sequence[int] = (20, 10),
        latent_dim: int = 2,
        activation: str = "tanh",
        negative_slope: float = 0.2,
        latent_activation: str = "identity",
        output_activation: str = "sigmoid",
        init: str = "default",
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ApaError(f"model.net.init={init!r}; use one of {', '.join(INITS)}.")
        if latent_dim < 1 or any(width < 1 for width in hidden):
            raise ApaError(f"model.net.hidden={list(hidden)} and latent_dim={latent_dim} must be positive widths.")
        self.image_shape, self.latent_dim = tuple(image_shape), latent_dim
        widths = [math.prod(self.image_shape), *hidden, latent_dim]

        def stack(sizes: list[int], last: str, last_key: str) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
                layers.append(nn.Linear(fan_in, fan_out))
                is_last = i == len(sizes) - 2
                name, key = (last, last_key) if is_last else (activation, "model.net.activation")
                layers.append(activation_layer(name, negative_slope, key))
            return nn.Sequential(*layers)

        self.encoder = stack(widths, latent_activation, "model.net.latent_activation")
        self.decoder = stack(widths[::-1], output_activation, "model.net.output_activation")
        if init == "course":
            self.course_init_()

    @torch.no_grad()
    def course_init_(self) -> None:
        """Weights and biases of every layer ~ U(0, 1) * (fan_in + 1)^-1/2."""
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                scale = (layer.in_features + 1) ** -0.5
                layer.weight.uniform_(0, 1).mul_(scale)
                layer.bias.uniform_(0, 1).mul_(scale)

    def encode(self, x: Tensor) -> Tensor:
        """Codes ``(N, latent_dim)`` of images ``(N, *image_shape)``."""
        return self.encoder(x.flatten(1))

    def decode(self, z: Tensor) -> Tensor:
        """Images ``(N, *image_shape)`` for codes ``(N, latent_dim)``."""
        return self.decoder(z).view(-1, *self.image_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))
