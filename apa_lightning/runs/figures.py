"""Pictures for people: labelled image grids drawn large, and PNG files written atomically."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from apa_lightning.runs.files import write_atomically

MIN_IMAGE_SIZE = 64  # on-screen pixels of an image's shorter side, at least
GAP = 2  # white pixels between images
FONT_SIZE = 14
MARGIN = 6  # pixels between a label and what surrounds it
CARD_WIDTH = 300  # pixels: TensorBoard's Images tab shrinks a wider picture to about this width by default
READABLE_SIZE = 11  # pixels: text at least this size once shrunk to CARD_WIDTH stays readable
MAX_FONT_SIZE = 40  # pixels: long row labels would otherwise grow the font without end


@cache
def label_font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib) at ``size`` pixels."""
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def text_width(text: str, size: int = FONT_SIZE) -> int:
    """Width in pixels of ``text`` in the label font at ``size`` pixels."""
    return math.ceil(label_font(size).getlength(text))


def line_height(size: int = FONT_SIZE) -> int:
    """Height in pixels of a title or column-label line at font ``size``."""
    ascent, descent = label_font(size).getmetrics()
    return ascent + descent + 2 * MARGIN


def readable_points(figure: Figure) -> float:
    """The font size in points that a matplotlib ``figure`` needs for its text to be ``READABLE_SIZE`` pixels
    when TensorBoard draws it ``CARD_WIDTH`` pixels wide (at least 10 points)."""
    shrink = max(1.0, figure.get_figwidth() * figure.dpi / CARD_WIDTH)
    return max(10.0, READABLE_SIZE * shrink * 72 / figure.dpi)


def upscale_factor(height: int, width: int, min_size: int = MIN_IMAGE_SIZE) -> int:
    """The smallest whole factor that draws a ``height`` x ``width`` image at least ``min_size`` pixels on its
    shorter side."""
    return max(1, math.ceil(min_size / min(height, width)))


def _fit(text: str, width: int, size: int = FONT_SIZE) -> str:
    """``text``, shortened with an ellipsis to at most ``width`` pixels at font ``size``."""
    while text and text_width(text, size) > width:
        text = text[:-2] + "…" if len(text) > 1 else ""
    return text


def _grid_width(rows: Sequence[tuple[str, Tensor]], title: str, cell_w: int, size: int) -> tuple[int, int]:
    """(label column width, picture width) of a labelled grid at font ``size``, widened to hold ``title``."""
    labels = [label for label, _ in rows]
    label_w = max(text_width(label, size) for label in labels) + 2 * MARGIN if any(labels) else 0
    columns = max(len(images) for _, images in rows)
    return label_w, max(label_w + GAP + columns * (cell_w + GAP), text_width(title, size) + 2 * MARGIN if title else 0)


def _wrap(text: str, width: int, size: int) -> list[str]:
    """``text`` broken at spaces into lines of at most ``width`` pixels at font ``size`` (a longer word alone)."""
    lines = [""]
    for word in text.split():
        joined = f"{lines[-1]} {word}".strip()
        if lines[-1] and text_width(joined, size) > width:
            lines.append(word)
        else:
            lines[-1] = joined
    return lines


def labelled_grid(
    rows: Sequence[tuple[str, Tensor]],
    title: str = "",
    column_labels: Sequence[str] = (),
    min_size: int = MIN_IMAGE_SIZE,
    readable_at: int | None = None,
) -> Tensor:
    """One picture of ``rows``, each ``(label, images (N, C, H, W) in [0, 1])`` with its label left of it.

    Every image is upscaled with nearest neighbour by ``upscale_factor`` (at least ``min_size`` pixels on its
    shorter side) and framed by ``GAP`` white pixels; ``title`` is a line on top (the picture widens to hold it)
    and ``column_labels`` are written above the columns (shortened to a column's width). Rows may be shorter than
    the longest one. The text is ``FONT_SIZE`` pixels, or with ``readable_at`` (TensorBoard's ``CARD_WIDTH``) as
    large as it takes to stay ``READABLE_SIZE`` pixels when the picture is shrunk to that width (at most
    ``MAX_FONT_SIZE``), the title then wrapped to the picture's width. Returns
    ``(3, height, width)`` in [0, 1], for TensorBoard's ``add_image`` and ``save_png``.
    """
    channels, height, width = rows[0][1].shape[1:]
    scale = upscale_factor(height, width, min_size)
    cell_h, cell_w = height * scale, width * scale
    size = FONT_SIZE
    for _ in range(10):  # a larger font widens the label column, and so the picture: a few rounds settle it
        label_w, picture_w = _grid_width(rows, "" if readable_at else title, cell_w, size)
        needed = min(MAX_FONT_SIZE, math.ceil(READABLE_SIZE * picture_w / readable_at)) if readable_at else size
        if needed <= size:
            break
        size = needed
    # a title wider than the picture: wrapped for TensorBoard (widening would shrink all text), else it widens it
    title_lines = _wrap(title, picture_w - 2 * MARGIN, size) if title and readable_at else [title] if title else []
    labels = [label for label, _ in rows]
    line = line_height(size)
    top = line * (len(title_lines) + bool(column_labels))
    canvas = torch.full((3, top + GAP + len(rows) * (cell_h + GAP), picture_w), 255, dtype=torch.uint8)
    for r, (_, images) in enumerate(rows):
        pixels = images.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
        pixels = pixels.expand(-1, 3, -1, -1) if channels == 1 else pixels
        pixels = pixels.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        y = top + GAP + r * (cell_h + GAP)
        for c, image in enumerate(pixels):
            x = label_w + GAP + c * (cell_w + GAP)
            canvas[:, y : y + cell_h, x : x + cell_w] = image
    picture = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw, font = ImageDraw.Draw(picture), label_font(size)
    for i, text in enumerate(title_lines):
        draw.text((MARGIN, line * (i + 0.5)), text, fill="black", font=font, anchor="lm")
    for c, text in enumerate(column_labels):
        x = label_w + GAP + c * (cell_w + GAP) + cell_w / 2
        draw.text((x, top - line / 2), _fit(text, cell_w, size), fill="black", font=font, anchor="mm")
    for r, label in enumerate(labels):
        draw.text((MARGIN, top + GAP + r * (cell_h + GAP) + cell_h / 2), label, fill="black", font=font, anchor="lm")
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).float() / 255


def save_png(path: str | Path, picture: Tensor) -> None:
    """Write a ``(3, H, W)`` picture in [0, 1] as an RGB PNG, atomically."""
    array = picture.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    write_atomically(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def save_figure(path: str | Path, figure: Figure, dpi: int = 120) -> None:
    """Write a matplotlib figure as a PNG, atomically."""
    write_atomically(path, lambda f: figure.savefig(f, format="png", dpi=dpi))
