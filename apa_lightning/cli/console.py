"""What a run prints: every message once, without the libraries' advertisements and deprecation notices."""

from __future__ import annotations

import logging
import warnings

# (category, start of the message) of warnings about the installed libraries, not about the run
IGNORED_WARNINGS = (
    # torch >= 2.10 deprecates a check inside lightning/pytorch/utilities/_pytree.py, once per process
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # training values are logged once per epoch (FastPathModule.log_training): log_every_n_steps does not apply
    (UserWarning, r"The number of training batches \(\d+\) is smaller than the logging interval"),
    # to every run srun did not start where SLURM is installed, though only DDP over a job's tasks needs srun
    (UserWarning, r"The `srun` command is available on your system but is not used"),
)
# logger -> text of the lines dropped: Lightning's advertisements (every fit), submitit's failed status polls on a
# cluster without job accounting (it learns a trial's end from its result file: docs/cluster.md)
DROPPED_LINES = {"lightning.pytorch.utilities.rank_zero": "💡 Tip:", "submitit": "Bypassing sacct error"}


class ConsoleFormatter(logging.Formatter):
    """An INFO record as its bare message, any other as ``LEVEL: message`` (the log file keeps Hydra's format)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno == logging.INFO else f"{record.levelname}: {text}"


def _drop_lines(record: logging.LogRecord) -> bool:
    """A logging filter: False for a line ``DROPPED_LINES`` drops."""
    text = DROPPED_LINES.get(record.name)
    return text is None or text not in record.getMessage()


def quiet_console() -> None:
    """Print each of Lightning's messages once, through the root logger's handlers where it has some (Hydra's console
    and the run's log file), drop ``DROPPED_LINES`` and ignore ``IGNORED_WARNINGS``. Call it after ``import
    lightning``, which gives Lightning's loggers handlers of their own; safe to call repeatedly."""
    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # those Lightning gives handlers
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
    for name in DROPPED_LINES:  # submitit's logger need not be imported yet
        logger = logging.getLogger(name)
        if _drop_lines not in logger.filters:
            logger.addFilter(_drop_lines)
    for category, message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
