"""The test's per-class report, confusion matrix and figures."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from apa_lightning.callbacks.family import require_model
from apa_lightning.metrics.classification import confusion_figure, headline, per_class_figure, report_rows, write_report
from apa_lightning.models.classifier import ClassifierModule


class ClassificationReport(L.Callback):
    """After the test of a classifier (``ClassifierModule``, its ``test_confusion`` metric): writes
    ``classification_report.txt``/``.csv`` and ``confusion_matrix.png`` into the run directory (rank 0 only), logs
    ``test/macro_f1`` and ``test/weighted_f1``, and puts the confusion matrix and per-class figures into
    TensorBoard. Raises ApaError at setup for a model that is not a classifier."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_model("classification_report", "reports a classifier's test", pl_module, ClassifierModule)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: ClassifierModule) -> None:
        confusion = pl_module.test_confusion.compute().cpu()  # summed over all ranks
        classes = trainer.datamodule.classes if trainer.datamodule is not None else []  # None: test dataloaders
        names = list(classes or map(str, range(len(confusion))))
        numbers = headline(confusion)
        pl_module.log_dict({f"test/{k}": numbers[k] for k in ("macro_f1", "weighted_f1")})
        if not trainer.is_global_zero:
            return
        write_report(confusion, names, Path(trainer.default_root_dir))
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                step = trainer.global_step
                logger.experiment.add_figure("test/confusion_matrix", confusion_figure(confusion, names), step)
                logger.experiment.add_figure("test/per_class", per_class_figure(report_rows(confusion, names)), step)
