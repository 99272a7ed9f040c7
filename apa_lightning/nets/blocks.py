"""Layer blocks shared by the report networks."""

from collections.abc import Sequence

from torch import nn


def conv_bn_elu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (padding 1), BatchNorm, ELU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ELU(),
    )


def deconv_bn_elu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 transposed convolution (padding 1; doubles the size when ``stride`` is 2), BatchNorm, ELU."""
    return nn.Sequential(
        nn.ConvTranspose2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, output_padding=stride - 1
        ),
        nn.BatchNorm2d(out_channels),
        nn.ELU(),
    )


def mlp_head(in_features: int, hidden: Sequence[int], num_classes: int, dropout: float) -> nn.Sequential:
    """Fully connected classifier: for each hidden width Linear + ReLU + Dropout, then the output Linear."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)
