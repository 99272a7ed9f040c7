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


def read_state_dict(net: nn.Module, path: Path, name: str, fix: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` after checking it is one for ``net`` (torchvision's ``name``): same keys, same
    shapes. Raises ApaError naming the file, what was expected and ``fix`` (the way out) when it is not."""
    expected = f"torchvision's {name} ImageNet weights ({TORCHVISION_NETS[name][1].url})"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file; never unpickle objects
        raise ApaError(
            f"{path} cannot be read as PyTorch weights (torch.load fails with {type(exc).__name__}: the file is "
            f"truncated, damaged or something else); expected {expected}. {fix}"
        ) from None
    own = net.state_dict()
    if not isinstance(state, dict):
        raise ApaError(f"{path} holds a {type(state).__name__}, not a state dict; expected {expected}. {fix}")
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    resized = [k for k in own.keys() & state.keys() if getattr(state[k], "shape", None) != own[k].shape]
    if missing or unexpected or resized:
        found = "; ".join(
            f"{what}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''} ({len(keys)})"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shapes", sorted(resized)))
            if keys
        )
        raise ApaError(f"{path} does not hold weights for {name} ({found}); expected {expected}. {fix}")
    return state


def torchvision_net(
    name: str, pretrained: bool = False, weights_path: str | None = None, weights_key: str = "model.net.weights_path"
) -> nn.Module:
    """torchvision's ``name`` network with its 1000-class ImageNet head.

    pretrained: the ImageNet weights from ``weights_path`` (the config key ``weights_key``) if given, else from
    torchvision's cache, which torchvision fills by downloading. Raises ApaError naming the file, the URL and
    the way out when the weights are missing and cannot be downloaded, or when the file is not those weights.
    """
    if name not in TORCHVISION_NETS:
        raise ApaError(f"unknown torchvision network {name!r}; choose one of {', '.join(TORCHVISION_NETS)}.")
    builder, weights = TORCHVISION_NETS[name]
    net = builder(weights=None)
    if not pretrained:
        return net
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise ApaError(f"{weights_key}={path} is not a file; point it at a copy of {weights.url}.")
        fix = f"Point {weights_key} at a good copy of that file."
    else:
        path = cached_weights_file(name)
        fix = f"Delete it and run again to download it anew, or set {weights_key} to a good copy."
        if not path.is_file():
            try:
                net.load_state_dict(weights.get_state_dict(progress=True, check_hash=True))
                return net
            except (OSError, RuntimeError) as exc:  # URLError and friends: no network; a wrong hash
                raise ApaError(
                    f"The ImageNet weights of {name} are not in {path} and could not be downloaded from "
                    f"{weights.url}. Ways out: download that file into {path.parent} (TORCH_HOME moves it), or set "
                    f"{weights_key} to a copy of it, or train from scratch with model.net.pretrained=false."
                ) from exc
    net.load_state_dict(read_state_dict(net, path, name, fix))
    return net
