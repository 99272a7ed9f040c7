"""torchvision classification networks (scratch or ImageNet-pretrained) with a new head for the dataset."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from apa_lightning.errors import ApaError
from apa_lightning.nets.pretrained import torchvision_net

FREEZE_MODES = ("none", "features")


def check_freeze(freeze: str) -> str:
    """``freeze`` itself when it is one of FREEZE_MODES (the one vocabulary of every network); raises ApaError."""
    if freeze not in FREEZE_MODES:
        raise ApaError(
            f"model.net.freeze={freeze!r}; use one of {', '.join(FREEZE_MODES)} (features: only the new classifier "
            "trains; none: every layer trains)."
        )
    return freeze


def freeze_all_but(net: nn.Module, head: nn.Module, freeze: str) -> nn.Module:
    """``freeze=features``: every parameter outside ``head`` stops training; ``none`` leaves all trainable.
    Raises ApaError for any other value."""
    if check_freeze(freeze) == "features":
        net.requires_grad_(False)
        head.requires_grad_(True)
    return net


def set_in_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """``conv`` for ``in_channels`` inputs; a pretrained RGB filter becomes its sum over the colour channels
    for grey inputs (the response to a grey image stays the same)."""
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
    )
    if in_channels == 1:
        with torch.no_grad():
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    return new


def vgg16(
    num_classes: int = 10,
    in_channels: int = 3,
    pretrained: bool = False,
    freeze: str = "none",
    hidden_widths: Sequence[int] = (4096, 4096),
    dropout: float = 0.5,
    weights_path: str | None = None,
    log_softmax: bool = False,
) -> nn.Module:
    """torchvision VGG16 whose classifier is, for each of ``hidden_widths``, Linear + ReLU + Dropout(``dropout``),
    then a new output Linear for ``num_classes`` (and LogSoftmax with ``log_softmax``).

    A hidden layer of torchvision's shape in torchvision's place is torchvision's own layer, with its ImageNet
    weights when ``pretrained``: the first when it maps 25088 -> 4096, the last when it maps 4096 -> 4096. So the
    original widths (4096, 4096) keep both hidden layers and only the output layer is new; (8192, 4096, 4096)
    (the VGG16 report's §2.3 variant 1) keeps the last; (2048, 2048) builds every layer anew.

    ``log_softmax`` ends the classifier with LogSoftmax(dim=1), as the report's §2.3 variants did. The
    classifier's cross-entropy applies log-softmax once more, which leaves log-probabilities as they are (their
    logsumexp is 0): the loss is the negative log-likelihood of the network's log-probabilities, and softmax and
    argmax of its output give the same probabilities and classes as without it.
    """
    check_freeze(freeze)  # before loading (or downloading) any weights
    net = torchvision_net("vgg16", pretrained, weights_path)
    net.features[0] = set_in_channels(net.features[0], in_channels)
    torchvision_layers = {(0, 512 * 7 * 7, 4096): net.classifier[0], (-1, 4096, 4096): net.classifier[3]}
    layers: list[nn.Module] = []
    in_features = 512 * 7 * 7
    for at, width in enumerate(hidden_widths):
        place = 0 if at == 0 else -1 if at == len(hidden_widths) - 1 else None
        linear = torchvision_layers.get((place, in_features, width)) or nn.Linear(in_features, width)
        layers += [linear, nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    if log_softmax:
        layers.append(nn.LogSoftmax(dim=1))
    net.classifier = nn.Sequential(*layers)
    return freeze_all_but(net, net.classifier, freeze)


def resnet18(
    num_classes: int = 10,
    in_channels: int = 3,
    pretrained: bool = False,
    freeze: str = "none",
    dropout: float = 0.0,
    weights_path: str | None = None,
) -> nn.Module:
    """torchvision ResNet18 with a new fully connected layer (after ``dropout``) for ``num_classes``."""
    check_freeze(freeze)  # before loading (or downloading) any weights
    net = torchvision_net("resnet18", pretrained, weights_path)
    net.conv1 = set_in_channels(net.conv1, in_channels)
    net.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(net.fc.in_features, num_classes))
    return freeze_all_but(net, net.fc, freeze)


def alexnet(
    num_classes: int = 10,
    in_channels: int = 3,
    pretrained: bool = False,
    freeze: str = "none",
    dropout: float = 0.5,
    weights_path: str | None = None,
) -> nn.Module:
    """torchvision AlexNet whose last classifier layer is replaced for ``num_classes``; ``freeze=features``
    freezes the convolutional layers, as the EuroSAT report did."""
    check_freeze(freeze)  # before loading (or downloading) any weights
    net = torchvision_net("alexnet", pretrained, weights_path)
    net.features[0] = set_in_channels(net.features[0], in_channels)
    net.classifier[0].p = net.classifier[3].p = dropout
    net.classifier[6] = nn.Linear(net.classifier[6].in_features, num_classes)
    return freeze_all_but(net, net.classifier, freeze)


def mobilenet_v2(
    num_classes: int = 10,
    in_channels: int = 3,
    pretrained: bool = False,
    freeze: str = "none",
    dropout: float = 0.2,
    weights_path: str | None = None,
) -> nn.Module:
    """torchvision MobileNetV2 with a new final layer for ``num_classes``; ``freeze=features`` freezes the
    convolutional layers."""
    check_freeze(freeze)  # before loading (or downloading) any weights
    net = torchvision_net("mobilenet_v2", pretrained, weights_path)
    first = net.features[0][0]
    net.features[0][0] = set_in_channels(first, in_channels)
    net.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(net.last_channel, num_classes))
    return freeze_all_but(net, net.classifier, freeze)
