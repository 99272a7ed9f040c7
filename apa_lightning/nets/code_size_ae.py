"""The lecture's code-size study: conv autoencoders whose code is one 14x14, 7x7, 2x2 or 1x1 map."""

from __future__ import annotations

from torch import Tensor, nn

from apa_lightning.errors import ApaError

INPUT_SIZE = 28

# Encoder layers per code size, for 28x28 inputs: (out_channels, kernel, stride, padding), each + ReLU; the last
# one gives the single-channel code. The decoder mirrors them with transposed convolutions.
ENCODERS: dict[int, list[tuple[int, int, int, int]]] = {
    14: [(16, 3, 1, 1), (1, 3, 2, 1)],  # 28 -> 28 -> 14
    7: [(16, 3, 2, 1), (32, 3, 2, 1), (1, 3, 1, 1)],  # 28 -> 14 -> 7 -> 7
    2: [(16, 3, 2, 1), (32, 3, 2, 1), (1, 5, 2, 0)],  # 28 -> 14 -> 7 -> 2
    1: [(16, 3, 2, 1), (32, 3, 2, 1), (1, 7, 1, 0)],  # 28 -> 14 -> 7 -> 1
}


class CodeSizeAutoencoder(nn.Module):
    """Conv autoencoder of 28x28 images with a single-channel ``code_size`` x ``code_size`` code (14, 7, 2 or 1).

    encoder: the ``ENCODERS[code_size]`` convolutions, each + ReLU (the code too);
    decoder: their mirror image as transposed convolutions (sizes restored exactly), each + ReLU, the last
    back to ``in_channels`` + Sigmoid, so the output is in [0, 1].
    The code layer's bias starts at ``code_bias``: a single-channel ReLU code easily starts (or soon goes) all
    zero, which leaves a constant output (with PyTorch's default init, seed 42 kills the 14x14 code at once).
    ``input_shape`` and ``code_shape`` (C, H, W) tell the autoencoder module how much the code compresses.
    """

    def __init__(self, code_size: int = 7, in_channels: int = 1, code_bias: float = 0.1) -> None:
        super().__init__()
        if code_size not in ENCODERS:
            raise ApaError(f"model.net.code_size={code_size}; use one of {', '.join(map(str, ENCODERS))}.")
        self.input_shape = (in_channels, INPUT_SIZE, INPUT_SIZE)
        self.code_shape = (1, code_size, code_size)
        encoder: list[nn.Module] = []
        decoder: list[nn.Module] = []
        channels, size = in_channels, INPUT_SIZE
        for out_channels, kernel, stride, padding in ENCODERS[code_size]:
            encoder += [nn.Conv2d(channels, out_channels, kernel, stride, padding), nn.ReLU()]
            # the output padding that makes the transposed convolution give back exactly `size`
            extra = (size + 2 * padding - kernel) % stride
            last = not decoder
            decoder = [
                nn.ConvTranspose2d(out_channels, channels, kernel, stride, padding, output_padding=extra),
                nn.Sigmoid() if last else nn.ReLU(),
                *decoder,
            ]
            channels, size = out_channels, (size + 2 * padding - kernel) // stride + 1
        assert size == code_size, f"ENCODERS[{code_size}] gives {size}x{size} codes"
        nn.init.constant_(encoder[-2].bias, code_bias)
        self.encoder, self.decoder = nn.Sequential(*encoder), nn.Sequential(*decoder)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ApaError(
                f"CodeSizeAutoencoder's layers are made for {self.input_shape} images, got {tuple(x.shape[1:])}; "
                f"set data.image_size={INPUT_SIZE} and data.channels={self.input_shape[0]}."
            )
        return self.decoder(self.encoder(x))
