"""The EuroSAT report's middle-fusion network: AlexNet and MobileNetV2 features side by side."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from apa_lightning.nets.backbones import check_freeze, freeze_all_but
from apa_lightning.nets.blocks import mlp_head
from apa_lightning.nets.pretrained import torchvision_net


class MiddleFusion(nn.Module):
    """Both convolutional feature extractors run on the same image; MobileNetV2's map (1280 channels) is
    average-pooled to AlexNet's 6x6 map (256 channels), the two are concatenated along channels, and a new
    classifier (``hidden`` widths, ``dropout``) predicts the class.

    The backbones come from ``torchvision_net`` (ImageNet weights when ``pretrained``); ``freeze`` is
    ``features`` (only the classifier trains) or ``none``, as for every network.
    """

    def __init__(
        self,
        num_classes: int = 10,
        pretrained: bool = True,
        freeze: str = "features",
        hidden: Sequence[int] = (512,),
        dropout: float = 0.5,
        alexnet_weights_path: str | None = None,
        mobilenet_weights_path: str | None = None,
    ) -> None:
        super().__init__()
        check_freeze(freeze)  # before loading (or downloading) any weights
        alexnet = torchvision_net("alexnet", pretrained, alexnet_weights_path, "model.net.alexnet_weights_path")
        mobilenet = torchvision_net(
            "mobilenet_v2", pretrained, mobilenet_weights_path, "model.net.mobilenet_weights_path"
        )
        self.alexnet_features = nn.Sequential(alexnet.features, alexnet.avgpool)  # (256, 6, 6) at any input size
        self.mobilenet_features = mobilenet.features  # (1280, 7, 7) at 224 pixels
        self.pool = nn.AdaptiveAvgPool2d((6, 6))
        channels = 256 + mobilenet.last_channel
        self.classifier = nn.Sequential(nn.Flatten(), mlp_head(channels * 6 * 6, hidden, num_classes, dropout))
        freeze_all_but(self, self.classifier, freeze)

    def forward(self, x: Tensor) -> Tensor:
        fused = torch.cat([self.alexnet_features(x), self.pool(self.mobilenet_features(x))], dim=1)
        return self.classifier(fused)
