"""Labelled image grids: sizes, nearest-neighbour upscaling, labels; EDA rows named by class."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apa_lightning.eda import explore
from apa_lightning.figures import GAP, MARGIN, labelled_grid, line_height, text_width, upscale_factor


def grid_size(
    labels: list[str], columns: int, rows: int, cell: tuple[int, int], top_lines: int, title: str = ""
) -> tuple[int, int]:
    """(width, height) a labelled grid must have: label column, GAP-framed cells, title / column-label lines; at
    least as wide as its ``title``."""
    label_w = max(text_width(label) for label in labels) + 2 * MARGIN if any(labels) else 0
    width = max(label_w + GAP + columns * (cell[1] + GAP), text_width(title) + 2 * MARGIN)
    return width, top_lines * line_height() + GAP + rows * (cell[0] + GAP)


@pytest.mark.parametrize(("shape", "factor"), [((28, 28), 3), ((32, 32), 2), ((64, 64), 1), ((7, 5), 13)])
def test_every_image_is_drawn_at_least_64_pixels(shape, factor):
    assert upscale_factor(*shape) == factor and min(shape) * factor >= 64


def test_labelled_grid_places_each_image_upscaled_with_nearest_neighbour_under_its_labels():
    images = torch.rand(2, 3, 1, 28, 28)
    rows = [("input", images[0]), ("reconstruction", images[1])]
    grid = labelled_grid(rows, title="a title", column_labels=["cat", "dog", "HerbaceousVegetation"])
    assert grid.shape == (3, *reversed(grid_size(["input", "reconstruction"], 3, 2, (84, 84), top_lines=2)))
    assert grid.min() >= 0 and grid.max() <= 1
    label_w = text_width("reconstruction") + 2 * MARGIN
    for r in range(2):
        for c in range(3):
            y, x = 2 * line_height() + GAP + r * (84 + GAP), label_w + GAP + c * (84 + GAP)
            cell = grid[:, y : y + 84, x : x + 84]
            expected = images[r, c].mul(255).round().div(255).repeat_interleave(3, 1).repeat_interleave(3, 2)
            torch.testing.assert_close(cell, expected.expand(3, -1, -1), atol=1e-6, rtol=0)  # grey: R = G = B
        band = grid[:, y : y + 84, MARGIN:label_w]
        assert (band < 0.5).any()  # the row's label is written left of it
    assert (grid[:, : line_height(), :] < 0.5).any() and (
        grid[:, line_height() : 2 * line_height(), label_w:] < 0.5
    ).any()
    assert torch.all(grid[:, -GAP:, :] == 1)  # white frame


def test_rows_may_be_shorter_and_unlabelled_and_a_long_title_widens_the_picture():
    grid = labelled_grid([("", torch.zeros(4, 3, 32, 32)), ("", torch.zeros(1, 3, 32, 32))])
    assert grid.shape == (3, GAP + 2 * (64 + GAP), GAP + 4 * (64 + GAP))
    assert torch.all(grid[:, GAP + 64 + GAP :, GAP + 64 + GAP :] == 1)  # the short row's missing images: white
    title = "a title much wider than the single image below it"
    grid = labelled_grid([("", torch.zeros(1, 1, 32, 32))], title=title)
    assert grid.shape == (3, line_height() + GAP + 64 + GAP, text_width(title) + 2 * MARGIN)


def test_eda_rows_are_named_by_class(make_cfg):
    cfg = make_cfg("task=eda", "data=digits", "eda.samples_per_class=4")
    summary = explore(cfg)
    out = Path(cfg.paths.output_dir)
    classes = json.loads((out / "dataset_summary.json").read_text())["classes"]
    assert classes == summary["classes"] == [str(d) for d in range(10)]
    picture = np.asarray(Image.open(out / "samples_per_class.png").convert("L"))
    assert (picture.shape[1], picture.shape[0]) == grid_size(classes, 4, 10, (84, 84), top_lines=1)
    label_w = text_width("0") + 2 * MARGIN
    for r in range(10):  # each class's name left of its row
        y = line_height() + GAP + r * (84 + GAP)
        assert (picture[y : y + 84, :label_w] < 128).any()
