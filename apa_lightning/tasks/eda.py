"""``task=eda``: what a dataset holds, before training on it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig
from torch import Tensor

from apa_lightning.data.in_memory import InMemoryImageDataModule, channel_stats
from apa_lightning.runs.figures import labelled_grid, save_figure, save_png
from apa_lightning.runs.files import write_text_atomically
from apa_lightning.tasks.train import instantiate_plain

log = logging.getLogger(__name__)


def class_counts(labels: Tensor, num_classes: int) -> list[int]:
    """How many images each class has."""
    return torch.bincount(labels, minlength=num_classes).tolist()


def samples_per_class(images: Tensor, labels: Tensor, classes: list[str], per_class: int, seed: int) -> Tensor:
    """A labelled picture (``figures.labelled_grid``) with one row per class, named, of ``per_class`` randomly
    chosen images (uint8 ``(N, C, H, W)``); a class with fewer images has a shorter row."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for cls, name in enumerate(classes):
        members = torch.nonzero(labels == cls).flatten()
        chosen = members[torch.randperm(len(members), generator=generator)[:per_class]]
        rows.append((name, images[chosen].float() / 255))
    return labelled_grid(rows, title=f"{per_class} random training images per class")


def distribution_figure(counts: dict[str, list[int]], classes: list[str]) -> Figure:
    """Bar charts of the images per class, one panel per split."""
    figure = Figure(figsize=(5 * len(counts), 4))
    for i, (split, values) in enumerate(counts.items(), start=1):
        ax = figure.add_subplot(1, len(counts), i)
        ax.bar(range(len(classes)), values)
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels(classes, rotation=45, ha="right")
        ax.set(title=f"{split}: {sum(values)} images", ylabel="images")
    figure.tight_layout()
    return figure


def explore(cfg: DictConfig) -> dict:
    """Write ``samples_per_class.png``, ``class_distribution.png`` and ``dataset_summary.json`` (class counts
    per split, per-channel mean and std of the training split in [0, 1] units) into the run directory."""
    datamodule: InMemoryImageDataModule = instantiate_plain(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": datamodule.train_set, "val": datamodule.val_set, "test": datamodule.test_set}
    classes, n = datamodule.classes, len(datamodule.classes)
    counts = {name: class_counts(split.labels, n) for name, split in splits.items()}
    mean, std = channel_stats(datamodule.train_set.images)
    summary = {
        "dataset": type(datamodule).__name__,
        "classes": classes,
        "image_shape": list(datamodule.train_set.images.shape[1:]),
        "counts": counts,
        "train_channel_mean": mean,
        "train_channel_std": std,
    }
    train = datamodule.train_set
    grid = samples_per_class(train.images, train.labels, classes, cfg.eda.samples_per_class, cfg.get("seed") or 0)
    save_png(out / "samples_per_class.png", grid)
    save_figure(out / "class_distribution.png", distribution_figure(counts, classes))
    write_text_atomically(out / "dataset_summary.json", json.dumps(summary, indent=2) + "\n")
    log.info(  # the console and run.log
        f"{summary['dataset']}: {', '.join(f'{k} {sum(v)}' for k, v in counts.items())} images of "
        f"{summary['image_shape']}, {n} classes\n"
        f"train channel mean {[round(m, 4) for m in mean]}, std {[round(s, 4) for s in std]}\n"
        f"Run directory: {out.resolve()}"
    )
    return summary
