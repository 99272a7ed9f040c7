"""Seeded stratified splits of labelled image sets, and the file list each run writes of its split."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from apa_lightning.runs.files import write_text_atomically

SPLITS = ("train", "val", "test")


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` (at most ``sum(weights)``) cut into integer parts in proportion to ``weights`` by largest
    remainders (ties: first wins), so the parts sum to exactly ``total`` and part ``i`` is at most ``weights[i]``."""
    if not 0 <= total <= sum(weights):
        raise ValueError(f"cannot cut {total} into parts of at most {list(weights)}")
    quotas = [total * w / sum(weights) for w in weights]
    counts = [min(int(q), w) for q, w in zip(quotas, weights, strict=True)]
    order = sorted(range(len(counts)), key=lambda i: counts[i] - quotas[i])
    while sum(counts) < total:
        for i in order:
            if sum(counts) < total and counts[i] < weights[i]:
                counts[i] += 1
    return counts


def stratified_split(
    labels: torch.Tensor, fractions: Sequence[float], seed: int, limit: int | None = None
) -> list[torch.Tensor]:
    """Index tensors of the train, validation and test parts, sorted, each keeping the class proportions.

    The parts take ``fractions`` of ``min(len(labels), limit)`` images (validation and test rounded, training
    the rest), so their sizes are exact; each class is shuffled with ``seed`` and cut by its share of each part
    (largest remainders of the class sizes; for the test part, of what validation left). With ``limit`` below
    ``len(labels)`` the images beyond it are left out.
    """
    classes, class_sizes = torch.unique(labels, return_counts=True)
    total = len(labels) if limit is None else min(limit, len(labels))
    n_val, n_test = round(fractions[1] * total), round(fractions[2] * total)
    kept = apportion(total, class_sizes.tolist())
    val = apportion(n_val, kept)
    test = apportion(n_test, [k - v for k, v in zip(kept, val, strict=True)])  # what validation left
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[], [], []]
    for i, cls in enumerate(classes.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_train = kept[i] - val[i] - test[i]
        chunks = members.split([n_train, val[i], test[i], len(members) - kept[i]])
        for part, chunk in zip(parts, chunks[:3], strict=True):
            part.append(chunk)
    return [torch.cat(part).sort().values for part in parts]


def write_split_csv(path: Path, rows: Iterable[Sequence[str]]) -> None:
    """Write ``split,file,label`` rows to ``path`` through a temporary file, so no half-written list remains."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["split", "file", "label"])
    writer.writerows(rows)
    write_text_atomically(path, text.getvalue())
