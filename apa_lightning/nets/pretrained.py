"""The one place that builds torchvision networks with ImageNet weights, online or offline."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models

from apa_lightning.errors import ApaError

# name -> (builder, the ImageNet weights used when pretrained)
TORCHVISION_NETS = {
    "alexnet": (models.alexnet, models.AlexNet_Weights.IMAGENET1K_V1),
    "mobilenet_v2": (models.mobilenet_v2, models.MobileNet_V2_Weights.IMAGENET1K_V2),
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "vgg16": (models.vgg16, models.VGG16_Weights.IMAGENET1K_V1),
}


def cached_weights_file(name: str) -> Path:
    """Where torchvision looks for ``name``'s ImageNet weights: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    weights = TORCHVISION_NETS[name][1]
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def torchvision_net(name: str, pretrained: bool = False, weights_path: str | None = None) -> nn.Module:
    """torchvision's ``name`` network with its 1000-class ImageNet head.

    pretrained: the ImageNet weights from ``weights_path`` if given, else from torchvision's cache, which
    torchvision fills by downloading. Raises ApaError naming the file, the URL and where to put it when
    the weights are missing and cannot be downloaded.
    """
    if name not in TORCHVISION_NETS:
        raise ApaError(f"unknown torchvision network {name!r}; choose one of {', '.join(TORCHVISION_NETS)}.")
    builder, weights = TORCHVISION_NETS[name]
    if not pretrained:
        return builder(weights=None)
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise ApaError(f"model.net.weights_path={path} is not a file; point it at a copy of {weights.url}.")
        net = builder(weights=None)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net
    cached = cached_weights_file(name)
    try:
        return builder(weights=weights)
    except OSError as exc:  # URLError and friends: no network
        raise ApaError(
            f"The ImageNet weights of {name} are not in {cached} and could not be downloaded from {weights.url}. "
            f"Ways out: download that file into {cached.parent} (TORCH_HOME moves it), or set "
            f"model.net.weights_path to a copy of it, or train from scratch with model.net.pretrained=false."
        ) from exc
