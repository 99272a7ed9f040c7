"""Loggers that continue a resumed run's records instead of starting them again."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that the rows already in ``metrics.csv`` (a resumed run writing into its
    own directory) are kept: Lightning's writer deletes that file when it opens a non-empty folder."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
            earlier = list(csv.DictReader(path.open(newline=""))) if path.is_file() else []
            with warnings.catch_warnings():  # "previous log files ... will be deleted": not here, they are kept
                warnings.filterwarnings("ignore", message="Experiment logs directory")
                writer = super().experiment
            writer.metrics = [{k: v for k, v in row.items() if v != ""} for row in earlier] + writer.metrics
        return self._experiment
