"""Layer blocks shared by the report networks."""

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
