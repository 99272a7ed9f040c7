"""Image files given to ``task=predict``: finding them, and reading any size and colour mode as a network's input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from apa_lightning.errors import ApaError

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # Pillow's modes of 16-bit grey images


def input_images(source: str | None) -> list[Path]:
    """The images to predict on: ``source`` itself, or the images directly inside that folder, sorted.
    Raises ApaError when there are none."""
    if not source:
        raise ApaError("task=predict needs input=<an image or a folder of images>.")
    path = Path(source).expanduser().resolve()
    if path.is_file():
        return [path]
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            return images
        raise ApaError(f"input={source}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    raise ApaError(f"input={source}: no such file or folder ({path}).")


def _eight_bit(image: Image.Image) -> Image.Image:
    """``image`` in a mode with 8 bits per channel: 16-bit grey scaled to 0-255 (Pillow's own conversion would
    clip it), transparency composited over black, other modes (palette, CMYK, 1-bit, float) as Pillow converts
    them."""
    if image.mode in SIXTEEN_BIT:
        pixels = np.asarray(image, dtype=np.float64) / 257
        return Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    if image.mode == "F":  # 32-bit float grey: Pillow converts it to 8-bit grey only
        return image.convert("L")
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def read_image(path: Path, channels: int, height: int, width: int) -> np.ndarray:
    """uint8 ``(channels, height, width)``: the image at ``path`` turned by its EXIF orientation, in 8 bits per
    channel (``_eight_bit``), grey (Pillow's luminance) or RGB, its central part of the target's aspect ratio
    resized with antialiasing. Raises ApaError when the file cannot be decoded."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
    # ImportError: once ultralytics is imported, its Image.open answers an unidentified file by importing pi_heif
    except (OSError, SyntaxError, ValueError, ImportError, Image.DecompressionBombError) as exc:
        raise ApaError(
            f"input: {path} cannot be read as an image ({exc}); replace it, or move it out of the input folder."
        ) from exc
    image = _eight_bit(image).convert("L" if channels == 1 else "RGB")
    image = ImageOps.fit(image, (width, height), method=Image.Resampling.BILINEAR)
    return np.array(image, dtype=np.uint8).reshape(height, width, channels).transpose(2, 0, 1)
