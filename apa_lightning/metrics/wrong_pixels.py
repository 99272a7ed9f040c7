"""The course's metric for binary images: pixels that come out wrong after thresholding the output."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MeanSquaredError, Metric, MetricCollection

REDUCTIONS = ("max", "mean")


def wrong_pixels(output: Tensor, target: Tensor, threshold: float = 0.5) -> Tensor:
    """Per image ``(N,)``: how many values of ``output`` thresholded at ``threshold`` differ from the binary
    ``target`` (values 0 and 1)."""
    return ((output >= threshold) != (target >= 0.5)).flatten(1).sum(1)


class WrongPixels(Metric):
    """The largest (``reduction="max"``) or mean (``"mean"``) number of wrong pixels per image, over every
    image seen (``wrong_pixels``)."""

    full_state_update = False

    def __init__(self, reduction: str = "max", threshold: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction, self.threshold = reduction, threshold
        self.add_state("largest", torch.tensor(0.0), dist_reduce_fx="max")
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, output: Tensor, target: Tensor) -> None:
        wrong = wrong_pixels(output, target, self.threshold).float()
        self.largest = torch.maximum(self.largest, wrong.max())
        self.total += wrong.sum()
        self.count += wrong.numel()

    def compute(self) -> Tensor:
        return self.largest if self.reduction == "max" else self.total / self.count


def wrong_pixel_metrics(prefix: str, threshold: float = 0.5) -> MetricCollection:
    """MSE and the largest and mean number of wrong pixels per image: keys ``<prefix>mse``,
    ``<prefix>max_wrong_pixels`` and ``<prefix>mean_wrong_pixels``."""
    return MetricCollection(
        {
            "mse": MeanSquaredError(),
            "max_wrong_pixels": WrongPixels("max", threshold),
            "mean_wrong_pixels": WrongPixels("mean", threshold),
        },
        prefix=prefix,
    )
