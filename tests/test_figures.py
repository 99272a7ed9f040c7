"""Labelled image grids: sizes, nearest-neighbour upscaling, labels; EDA rows named by class."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apa_lightning.runs.figures import (
    CARD_WIDTH,
    GAP,
    MARGIN,
    READABLE_SIZE,
    labelled_grid,
    line_height,
    text_width,
    upscale_factor,
)
from apa_lightning.tasks.eda import explore


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


def test_grids_for_tensorboard_write_labels_readable_at_the_card_width():
    rows = [("input", torch.rand(8, 1, 28, 28)), ("reconstruction", torch.rand(8, 1, 28, 28))]
    plain = labelled_grid(rows, column_labels=[str(d) for d in range(8)])
    grid = labelled_grid(rows, column_labels=[str(d) for d in range(8)], readable_at=CARD_WIDTH)
    width = grid.shape[2]
    # the row label's ink, measured in the picture: as wide as the label font draws it at a readable size
    band = grid[0, -(84 + GAP) : -GAP, : width - 8 * (84 + GAP)] < 0.5  # the last row's label column
    ink = band.any(0).nonzero()
    ink_width = int(ink.max() - ink.min() + 1)
    assert ink_width * CARD_WIDTH / width >= text_width("reconstruction", READABLE_SIZE) - 2
    assert width > plain.shape[2]  # larger text than the file-only grids' FONT_SIZE, so a wider label column
    # a long title is wrapped, not widening the picture (which would shrink everything on the card)
    titled = labelled_grid(rows, title="decoded along the line between the codes of the first two images " * 2)
    wrapped = labelled_grid(
        rows,
        title="decoded along the line between the codes of the first two images " * 2,
        column_labels=[str(d) for d in range(8)],
        readable_at=CARD_WIDTH,
    )
    assert titled.shape[2] > plain.shape[2] and wrapped.shape[2] == width and wrapped.shape[1] > grid.shape[1]


@pytest.mark.parametrize("count", [36, 1000])
def test_confusion_matrix_numbers_are_readable_and_fit_their_cells_at_the_card_width(count):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from apa_lightning.metrics.classification import confusion_figure, per_class_figure

    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    confusion = torch.full((10, 10), 3) + torch.eye(10, dtype=torch.long) * count
    figure = confusion_figure(confusion, names)
    renderer = FigureCanvasAgg(figure).get_renderer()
    shrink = CARD_WIDTH / (figure.get_figwidth() * figure.dpi)  # TensorBoard draws it CARD_WIDTH wide
    (ax,) = figure.axes
    cell = ax.transData.transform((1, 0))[0] - ax.transData.transform((0, 0))[0]
    numbers = ax.texts
    assert len(numbers) == 100
    for text in numbers:
        assert text.get_window_extent(renderer).width < cell  # inside its cell
    size = numbers[0].get_fontsize() * figure.dpi / 72 * shrink  # pixels on screen
    assert size >= (READABLE_SIZE if count < 100 else 7.5)  # four digits: as large as fits a ~22 px cell
    labels = [*ax.get_xticklabels(), *ax.get_yticklabels(), ax.title, ax.xaxis.label]
    assert all(label.get_fontsize() * figure.dpi / 72 * shrink >= READABLE_SIZE - 0.01 for label in labels)
    rows = [{"class": name, "precision": 0.5, "recall": 0.5, "f1": 0.5} for name in names]
    bars = per_class_figure(rows)
    shrink = CARD_WIDTH / (bars.get_figwidth() * bars.dpi)
    (ax,) = bars.axes
    labels = [*ax.get_xticklabels(), *ax.get_yticklabels(), ax.title, *ax.get_legend().get_texts()]
    assert all(label.get_fontsize() * bars.dpi / 72 * shrink >= READABLE_SIZE - 0.01 for label in labels)
