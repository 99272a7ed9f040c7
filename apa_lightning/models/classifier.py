"""Image classification training."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from apa_lightning.metrics.classification import MeanClassAccuracy
from apa_lightning.models.base import FAST_PATH_ARGS, FastPathModule
from apa_lightning.models.optim import configure_optimization


def accuracy_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Accuracy and mean class accuracy (mCA, as ``mean_class_accuracy`` defines it), keys ``<prefix>acc``."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "mca": MeanClassAccuracy(num_classes),
        },
        prefix=prefix,
    )


class ClassifierModule(FastPathModule):
    """Trains ``net`` (images -> class logits) with cross-entropy.

    A ``net`` that ends in LogSoftmax (the VGG16 report's §2.3 variants) trains the same way: log-softmax leaves
    log-probabilities unchanged, so the cross-entropy of its output is their negative log-likelihood.

    Logs ``<split>/loss``, ``acc`` and ``mca``; the test also fills ``test_confusion`` (rows: true class,
    columns: predicted), from which the ClassificationReport callback writes the per-class report.
    ``net``, ``optimizer`` and ``scheduler`` are ``_target_`` configs, kept as plain values in checkpoints;
    ``channels_last`` and ``compile``: see ``FastPathModule``.
    """

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        num_classes: int = 10,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(channels_last, compile)
        self.save_hyperparameters(ignore=FAST_PATH_ARGS)
        self.net = instantiate(net)
        self.train_metrics = accuracy_metrics(num_classes, "train/")
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)

    @property
    def loss_kind(self) -> str:
        """What ``<split>/loss`` is, for TensorBoard's tag ``<split>/loss_<kind>``."""
        return "cross_entropy"

    @property
    def main_metric(self) -> str:
        """The metric charted next to the loss in TensorBoard's custom scalars."""
        return "acc"

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> tuple[Tensor, Tensor]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        metrics = getattr(self, f"{split}_metrics")
        if split == "train":  # the predicted classes go to the metrics once per epoch: see log_training
            inputs = (logits.argmax(1), y)
            self.log_training({"train/loss": loss}, len(y), metrics, metric_inputs=inputs, prog_bar=("train/loss",))
            return loss, logits
        metrics.update(logits, y)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=split == "val")
        return loss, logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        _, logits = self._step(batch, "test")
        self.test_confusion.update(logits, batch[1])

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.train_metrics.reset()  # an epoch cut short never logged (and so never reset) them
        # a frozen backbone stays frozen: its BatchNorm layers keep their (pretrained) running statistics
        for module in self.net.modules():
            if isinstance(module, _BatchNorm) and not any(p.requires_grad for p in module.parameters()):
                module.eval()

    def configure_optimizers(self):
        return configure_optimization(self, self.hparams.optimizer, self.hparams.get("scheduler"))
