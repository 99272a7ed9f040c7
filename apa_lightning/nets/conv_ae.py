"""The reports' convolutional autoencoder."""

from torch import Tensor, nn

from apa_lightning.nets.blocks import conv_bn_elu, deconv_bn_elu


class ConvAutoencoder(nn.Module):
    """Encoder to a 16-channel code at half resolution (14x14 for MNIST), decoder back to the image.

    encoder: Conv(c,8,s2)  Conv(8,32)  Conv(32,64)  Conv(64,128)  Conv(128,16)      each + BN + ELU
    decoder: ConvT(16,128) ConvT(128,64) ConvT(64,32) ConvT(32,8)  each + BN + ELU,
             Upsample(x2, nearest), ConvT(8,c), BN(c), Sigmoid
    All kernels 3x3 with padding 1. Input height and width must be even; the output is in [0, 1].
    ``output_batchnorm=False`` drops the BN(c) before the Sigmoid: the reports have it, but normalising the
    output's logits over the batch slows the approach to a pure black background and white strokes.
    """

    def __init__(self, in_channels: int = 1, output_batchnorm: bool = True) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            conv_bn_elu(in_channels, 8, stride=2),
            conv_bn_elu(8, 32),
            conv_bn_elu(32, 64),
            conv_bn_elu(64, 128),
            conv_bn_elu(128, 16),
        )
        self.decoder = nn.Sequential(
            deconv_bn_elu(16, 128),
            deconv_bn_elu(128, 64),
            deconv_bn_elu(64, 32),
            deconv_bn_elu(32, 8),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.ConvTranspose2d(8, in_channels, kernel_size=3, stride=1, padding=1),
            *([nn.BatchNorm2d(in_channels)] if output_batchnorm else []),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))
