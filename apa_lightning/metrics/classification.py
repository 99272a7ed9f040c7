"""Per-class classification metrics from a confusion matrix, as sklearn's report lays them out.

The one definition of the averages, used for the logged ``val/mca`` and ``test/mca`` and for the report: like
``sklearn.metrics.classification_report``, they average over the classes that occur in the labels or the
predictions; a class absent from both is left out, a class predicted but absent from the labels scores 0.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from apa_lightning.runs.figures import readable_points

AVERAGES = ("macro avg", "weighted avg")


def per_class_metrics(confusion: Tensor) -> dict[str, Tensor]:
    """Precision, recall (= per-class accuracy), F1 and support per class; rows of ``confusion`` are the true
    classes, columns the predictions. A class never predicted (or absent) gets 0 where the ratio is 0/0."""
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    support, predicted = confusion.sum(dim=1), confusion.sum(dim=0)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp_min(1), 0.0)
    recall = torch.where(support > 0, true_positive / support.clamp_min(1), 0.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def evaluated_classes(confusion: Tensor) -> Tensor:
    """Boolean mask of the classes that occur among the labels or the predictions: those the averages count."""
    return (confusion.sum(dim=1) > 0) | (confusion.sum(dim=0) > 0)


def mean_class_accuracy(confusion: Tensor) -> float:
    """The reports' mCA: the mean per-class accuracy (recall) over the evaluated classes, which is sklearn's
    ``macro avg`` recall; 0 for an empty matrix."""
    recall = per_class_metrics(confusion)["recall"][evaluated_classes(confusion)]
    return recall.mean().item() if len(recall) else 0.0


class MeanClassAccuracy(MulticlassConfusionMatrix):
    """``mean_class_accuracy`` of the confusion matrix accumulated over an epoch (summed over all processes)."""

    def compute(self) -> Tensor:
        confusion = super().compute()
        return torch.tensor(mean_class_accuracy(confusion), device=confusion.device)


def report_rows(confusion: Tensor, class_names: Sequence[str]) -> list[dict[str, float | str]]:
    """One row per evaluated class (``class``, ``precision``, ``recall``, ``f1``, ``support``), then ``macro avg``
    and ``weighted avg`` rows, like ``sklearn.metrics.classification_report``."""
    metrics = per_class_metrics(confusion)
    support, evaluated = metrics["support"], evaluated_classes(confusion)
    rows: list[dict[str, float | str]] = [
        {
            "class": name,
            **{k: metrics[k][i].item() for k in ("precision", "recall", "f1")},
            "support": support[i].item(),
        }
        for i, name in enumerate(class_names)
        if evaluated[i]
    ]
    macro = evaluated.double() / evaluated.sum().clamp_min(1)
    weights = support / support.sum().clamp_min(1)
    for label, weight in zip(AVERAGES, (macro, weights), strict=True):
        rows.append(
            {"class": label, **{k: (metrics[k] * weight).sum().item() for k in ("precision", "recall", "f1")}}
            | {"support": support.sum().item()}
        )
    return rows


def headline(confusion: Tensor) -> dict[str, float]:
    """Accuracy, mCA and macro / weighted F1: the numbers a results table reports."""
    metrics = per_class_metrics(confusion)
    support, evaluated = metrics["support"], evaluated_classes(confusion)
    return {
        "acc": (confusion.diagonal().sum() / confusion.sum().clamp_min(1)).item(),
        "mca": mean_class_accuracy(confusion),
        "macro_f1": metrics["f1"][evaluated].mean().nan_to_num().item(),
        "weighted_f1": (metrics["f1"] * support / support.sum().clamp_min(1)).sum().item(),
    }


def format_report(rows: list[dict[str, float | str]], accuracy: float, mca: float) -> str:
    """The rows as a text table in sklearn's layout, with accuracy and mCA lines."""
    width = max(len(str(row["class"])) for row in rows) + 2
    header = f"{'':>{width}}{'precision':>10}{'recall':>10}{'f1-score':>10}{'support':>10}"
    lines = [header, ""]
    for row in rows:
        if row["class"] == AVERAGES[0]:
            total = int(row["support"])
            lines += ["", f"{'accuracy':>{width}}{'':>10}{'':>10}{accuracy:>10.4f}{total:>10d}"]
            lines.append(f"{'mCA':>{width}}{'':>10}{mca:>10.4f}{'':>10}{total:>10d}")
        values = "".join(f"{row[k]:>10.4f}" for k in ("precision", "recall", "f1"))
        lines.append(f"{row['class']:>{width}}{values}{int(row['support']):>10d}")
    return "\n".join(lines) + "\n"


def write_report(confusion: Tensor, class_names: Sequence[str], directory: Path) -> None:
    """Write ``classification_report.txt`` and ``.csv`` and ``confusion_matrix.png`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rows, numbers = report_rows(confusion, class_names), headline(confusion)
    (directory / "classification_report.txt").write_text(format_report(rows, numbers["acc"], numbers["mca"]))
    with open(directory / "classification_report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["class", "precision", "recall", "f1", "support"])
        writer.writeheader()
        writer.writerows(rows)
    confusion_figure(confusion, class_names).savefig(directory / "confusion_matrix.png", dpi=120)


def confusion_figure(confusion: Tensor, class_names: Sequence[str]) -> Figure:
    """The confusion matrix as a heat map with the counts written in, true classes down the side; its text large
    enough to read when TensorBoard draws the figure ``CARD_WIDTH`` pixels wide (``readable_points``), the counts
    as large as that or as fits a cell. No colour bar: the counts are written in."""
    n = len(class_names)
    figure = Figure(figsize=(1.8 + 0.5 * n, 1.6 + 0.5 * n), dpi=100)
    points = readable_points(figure)
    ax = figure.add_subplot()
    counts = confusion.cpu().numpy()
    ax.imshow(counts, cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n))
    ax.set_xlabel("predicted", fontsize=points)
    ax.set_ylabel("true", fontsize=points)
    ax.set_title("Confusion matrix", fontsize=points)
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=points)
    ax.set_yticklabels(class_names, fontsize=points)
    digits = len(str(int(counts.max()))) if counts.size else 1
    cell = 0.5 * 72  # points of a cell's width (the axes may shrink it a little)
    number = min(points, 0.9 * cell / (0.62 * digits))  # a digit of DejaVu Sans is 0.62 em wide
    threshold = counts.max() / 2
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                int(counts[i, j]),
                ha="center",
                va="center",
                fontsize=number,
                color="white" if counts[i, j] > threshold else "black",
            )
    figure.tight_layout()
    return figure


def per_class_figure(rows: list[dict[str, float | str]]) -> Figure:
    """Grouped bars of precision, recall and F1 for every class, its text readable at TensorBoard's card width."""
    classes = [row for row in rows if row["class"] not in AVERAGES]
    figure = Figure(figsize=(max(6, 0.7 * len(classes)), 4), dpi=100)
    points = readable_points(figure)
    ax = figure.add_subplot()
    for offset, key in zip((-0.25, 0, 0.25), ("precision", "recall", "f1"), strict=True):
        ax.bar([i + offset for i in range(len(classes))], [row[key] for row in classes], width=0.25, label=key)
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels([row["class"] for row in classes], rotation=45, ha="right", fontsize=points)
    ax.tick_params(axis="y", labelsize=points)
    ax.set_ylim(0, 1.3)  # the legend in a strip above the bars, which end at 1
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
    ax.set_title("Per-class metrics", fontsize=points)
    ax.legend(loc="upper center", ncols=3, fontsize=points)
    figure.tight_layout()
    return figure
