"""Loggers: TensorBoard files that name each loss by its kind; a CSV log of the steps that a resumed run continues."""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

SPLITS = ("train", "val", "test")
STEPS_FILE = "steps.csv"


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, writing every logged step into ``steps.csv`` (``STEPS_FILE``) instead of
    ``metrics.csv``, the run directory's own per-epoch table (``callbacks/epoch_metrics.py``), so that a run has one
    ``metrics.csv`` whatever its loggers; and a resumed run writing into its own directory appends to that file
    (Lightning's writer starts it anew)."""

    @property
    def experiment(self) -> ExperimentWriter:
        log_dir = Path(self.log_dir)
        if (log_dir / "metrics.csv").is_file() and not (log_dir / STEPS_FILE).exists():
            # a run of an earlier version logged its steps there: kept (Lightning's writer deletes a metrics.csv)
            (log_dir / "metrics.csv").rename(log_dir / STEPS_FILE)
        with warnings.catch_warnings():  # "previous log files ... will be deleted": only a metrics.csv would be
            warnings.filterwarnings("ignore", message="Experiment logs directory")
            writer = super().experiment
        if not isinstance(writer, ExperimentWriter):  # a DDP rank > 0 writes nothing
            return writer
        steps = Path(writer.log_dir) / STEPS_FILE
        if Path(writer.metrics_file_path) != steps:  # once, when it was created
            writer.metrics_file_path = str(steps)
            if steps.is_file():  # the earlier columns: rows with new ones rewrite the file under all of them
                with steps.open(newline="") as f:
                    writer.metrics_keys = sorted(next(csv.reader(f), []))
        return writer


class RunTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger, except that each split's ``loss`` is written under a tag naming its kind
    (``val/loss_mse``, ``val/loss_elbo_bce``, ``val/loss_cross_entropy``), so that losses of different kinds never
    share a chart, and that the first write adds a custom-scalars layout charting train and val of the loss and
    of the main metric together, and that the ``epoch`` scalar counts from 1 and is written once per epoch
    (``epoch_number``). ``describe`` gives the kind and the metric (``run.py``, before fit); without it
    the tags stay ``<split>/loss``. With ``name=""`` and ``version=""`` (``conf/logger/tensorboard.yaml``) the
    event files go into the run directory, which TensorBoard then names the run after."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_kind: str | None = None
        self.main_metric: str | None = None
        self._layout_written = False
        self._last_epoch: float | None = None  # the last `epoch` value written

    def describe(self, loss_kind: str | None, main_metric: str | None) -> None:
        """Set what the module's loss is (``mse``) and the metric to chart next to it (``psnr``, ``acc``)."""
        self.loss_kind, self.main_metric = loss_kind, main_metric

    def tag(self, name: str) -> str:
        """The TensorBoard tag of metric ``name``: ``<split>/loss_<kind>`` for a split's loss, else ``name``."""
        split, _, metric = name.partition("/")
        return f"{name}_{self.loss_kind}" if self.loss_kind and split in SPLITS and metric == "loss" else name

    def layout(self) -> dict[str, dict[str, list[Any]]]:
        """The custom-scalars layout: one Multiline chart each for the loss and the main metric, train and val."""
        charts = {f"loss ({self.loss_kind})" if self.loss_kind else "loss": "loss"}
        if self.main_metric:
            charts[self.main_metric] = self.main_metric
        return {
            "train and val": {
                title: ["Multiline", [f"^{re.escape(self.tag(f'{split}/{metric}'))}$" for split in ("train", "val")]]
                for title, metric in charts.items()
            }
        }

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self._layout_written:
            self.experiment.add_custom_scalars(self.layout())
            self._layout_written = True
        metrics = dict(metrics)
        if "epoch" in metrics:
            metrics["epoch"] = self.epoch_number(metrics)
            if metrics["epoch"] == self._last_epoch:  # the same epoch again (val end, train end, test after fit)
                del metrics["epoch"]
            else:
                self._last_epoch = metrics["epoch"]
        super().log_metrics({self.tag(name): value for name, value in metrics.items()}, step)

    @staticmethod
    def epoch_number(metrics: Mapping[str, float]) -> float:
        """The ``epoch`` scalar counted from 1, as metrics.csv, the checkpoints and the console count. Lightning
        adds the 0-based ``trainer.current_epoch`` to the metrics of the epoch being trained and validated, and
        after fit, to the test's, the number of epochs finished: the former get 1 added."""
        testing = any(name.startswith("test/") for name in metrics)
        return metrics["epoch"] if testing else metrics["epoch"] + 1
