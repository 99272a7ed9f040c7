"""A run's records: ``metrics.json`` from start to end (``RunRecord``, the one lifecycle of every task) and lines
for the run's log file only (``to_log_file``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from apa_lightning.errors import ApaError, describe, interruption, user_error
from apa_lightning.runs.files import read_json_record, write_metrics

log = logging.getLogger(__name__)

RECORD_FIX = (
    "It is the run's record, which the resumed run extends: delete it (the run then writes a new one, whose "
    "wall_time_s counts only the time from now on), then run the command again."
)
# a resume that only tests trains no epoch to time: these keep the earlier run's values
KEPT_ON_RESUME = ("images_per_s", "epoch_time_s")


def read_run_record(path: str | Path) -> dict[str, Any]:
    """A run's ``metrics.json`` as the run continues it (a resume, a requeued SLURM job). Raises ApaError when it is
    damaged."""
    return read_json_record(path, RECORD_FIX)


def failure(exc: BaseException) -> dict[str, str]:
    """How ``exc`` ended a run: status ``interrupted`` with the signal's name, or ``failed`` with the user-facing
    message (``Type: message`` for an unexpected error)."""
    signal_name = interruption(exc)
    if signal_name:
        return {"status": "interrupted", "signal": signal_name, "error": f"interrupted by {signal_name}"}
    return {"status": "failed", "error": user_error(exc) or describe(exc)}


class RunRecord:
    """The run's ``metrics.json``: opened with status ``running`` and what identifies the run in a sweep summary,
    closed once, by ``close`` (``completed`` or ``interrupted``, raising when it cannot be written) or by an
    exception leaving the ``with`` block before that (``failed`` with the error or ``interrupted`` with the signal;
    an error writing it then is logged, not raised, so it never hides the original one).

    ``results`` gives the run's results when it closes (whatever the run got to: the task's trainer may not
    exist yet); ``write`` says whether this process writes the file (DDP: global rank 0); ``lost`` turns an
    exception into the ApaError of a run directory that is gone or read-only, into which nothing is written.
    A resumed run (``resumed_from``) adds the ``wall_time_s`` of its earlier record.
    """

    def __init__(
        self,
        cfg: Any,
        run_dir: Path,
        results: Callable[[], dict[str, Any]] = dict,
        write: Callable[[], bool] = lambda: True,
        lost: Callable[[BaseException], ApaError | None] = lambda exc: None,
        **entries: Any,
    ) -> None:
        self.path = Path(run_dir) / "metrics.json"
        self.data: dict[str, Any] = {
            "status": "running",
            "task_name": cfg.get("task_name"),
            "tags": list(cfg.get("tags") or []),
            "optimized_metric": cfg.get("optimized_metric"),
            "optimized_mode": cfg.get("optimized_mode"),
            "run_dir": str(run_dir),
            **entries,
        }
        self.results, self.write, self.lost = results, write, lost
        self.start, self.closed = time.perf_counter(), False

    def __enter__(self) -> RunRecord:
        return self

    def close(self, status: str = "completed", **entries: Any) -> None:
        """Complete the record with the run's results and ``entries`` and write it; raises when it cannot."""
        self.data.update(status=status, **entries)
        self._save()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc is None or self.closed:
            return
        lost = None if interruption(exc) else self.lost(exc)
        self.data.update(failure(lost or exc))
        if lost is not None:  # nothing can be recorded in a directory that is gone or read-only
            raise lost from exc
        try:
            self._save()
        except Exception as failed:
            log.error("Could not write %s: %s", self.path, user_error(failed) or describe(failed))

    def _save(self) -> None:
        self.data.update(self.results())
        self.data["wall_time_s"] = round(time.perf_counter() - self.start, 2)
        if self.data.get("resumed_from") and self.path.is_file():
            earlier = read_run_record(self.path)
            self.data["wall_time_s"] = round(self.data["wall_time_s"] + (earlier.get("wall_time_s") or 0), 2)
            for key in KEPT_ON_RESUME:
                if key in self.data and self.data[key] is None:
                    self.data[key] = earlier.get(key)
        if self.write():
            write_metrics(self.path, self.data)
        self.closed = True  # from here the record is final: a second save would count a resume's time twice


def record_refused(cfg: Any, run_dir: Path, error: str) -> None:
    """Record a run that failed before its task recorded it (refused at start): status ``failed`` with ``error``.
    A directory that became unwritable or a full disk is logged as a warning."""
    try:
        RunRecord(cfg, run_dir).close("failed", error=error, best_score=None, test={})
    except (OSError, ApaError) as failed:
        log.warning("The failure could not be recorded in %s: %s", run_dir, failed)


def to_log_file(message: str, level: int = logging.INFO, logger: logging.Logger = log) -> None:
    """Give ``message`` as a record of ``logger`` at ``level`` to the root logger's file handlers only (the run's
    ``run.log``), not to the console."""
    if logger.isEnabledFor(level):
        record = logger.makeRecord(logger.name, level, __file__, 0, message, None, None)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler) and level >= handler.level:
                handler.handle(record)
