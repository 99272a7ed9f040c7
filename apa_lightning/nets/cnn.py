"""The reports' CIFAR-10 CNNs: base, V2 and V3, for any channel count, image size and class count."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from apa_lightning.nets.blocks import mlp_head


def conv_pool_block(in_channels: int, out_channels: int, batch_norm: bool, dropout: float = 0.0) -> nn.Sequential:
    """3x3 conv (padding 1) [+ BatchNorm] + ReLU + 2x2 max-pool (rounding up) [+ Dropout]."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class ConvClassifier(nn.Module):
    """Conv-pool blocks, then fully connected layers with dropout.

    ``widths`` are the conv blocks' filters; each block halves the image (rounding up). ``hidden`` are the
    widths of the fully connected layers before the output layer, each followed by ReLU and ``dropout``.
    """

    def __init__(
        self,
        widths: Sequence[int],
        hidden: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        dropout: float = 0.5,
        batch_norm: bool = False,
        block_dropout: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        block_dropout = block_dropout or [0.0] * len(widths)
        if len(block_dropout) != len(widths):
            raise ValueError(f"block_dropout needs one rate per conv block ({len(widths)}), got {len(block_dropout)}")
        channels = [in_channels, *widths]
        self.features = nn.Sequential(
            *(
                conv_pool_block(a, b, batch_norm, p)
                for a, b, p in zip(channels[:-1], channels[1:], block_dropout, strict=True)
            )
        )
        side = image_size
        for _ in widths:
            side = math.ceil(side / 2)
        self.classifier = nn.Sequential(nn.Flatten(), mlp_head(widths[-1] * side * side, hidden, num_classes, dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class CNNBase(ConvClassifier):
    """Base CNN: convs of 8, 32 and 16 filters (practical work 1, §1.3: "16-32-64-128 instead of 8-32-16") with
    max-pooling; FC 128 with ``dropout``. The layer list is the assignment's figure 1, which the report does not
    reproduce: the kernel sizes, the pooling, the FC width (128) and the dropout (0.5) are not stated (our choice).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, dropout: float = 0.5):
        super().__init__([8, 32, 16], [128], num_classes, in_channels, image_size, dropout)


class CNNV2(ConvClassifier):
    """CNN V2 (practical work 1, §1.3): convs 16-32-64-128, each followed by BatchNorm and max-pooling; FC layers
    with dropout 0.4. The FC width (256) and the 3x3 kernels are not stated (our choice)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, dropout: float = 0.4):
        super().__init__([16, 32, 64, 128], [256], num_classes, in_channels, image_size, dropout, batch_norm=True)


class CNNV3(ConvClassifier):
    """CNN V3 (practical work 1, §1.4): V2's conv blocks 16-32-64-128 plus a fifth block of 512 filters, each
    with BatchNorm, max-pooling and dropout rising from 0.2 to 0.5. The per-block rates between 0.2 and 0.5
    (0.3, 0.4, 0.4), the FC width (V2's 256) and its dropout (0.5) are not stated (our choice)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        dropout: float = 0.5,
        block_dropout: Sequence[float] = (0.2, 0.3, 0.4, 0.4, 0.5),
    ):
        super().__init__(
            [16, 32, 64, 128, 512], [256], num_classes, in_channels, image_size, dropout, True, block_dropout
        )
