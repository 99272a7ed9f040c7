"""What a run prints: every message once, without the libraries' advertisements and deprecation notices."""

from __future__ import annotations

import logging
import warnings

# (category, start of the message) of warnings about the installed libraries' own code, not about the run
IGNORED_WARNINGS = (
    # torch >= 2.10 deprecates a check inside lightning/pytorch/utilities/_pytree.py, once per process
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # training values are logged once per epoch (FastPathModule.log_training): log_every_n_steps does not apply
    (UserWarning, r"The number of training batches \(\d+\) is smaller than the logging interval"),
    # Lightning's hint, 2-3 times a run on any machine with SLURM installed, to every run srun did not start,
    # though only DDP over a SLURM job's tasks needs srun (docs/cluster.md says when)
    (UserWarning, r"The `srun` command is available on your system but is not used"),
)

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")  # those Lightning gives handlers


class ConsoleFormatter(logging.Formatter):
    """The console's format: an INFO record as its bare message, any other as ``LEVEL: message`` (the run's log
    file keeps Hydra's format with time and logger)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno == logging.INFO else f"{record.levelname}: {text}"


# logger -> text of the lines dropped: Lightning's advertisements (every fit), submitit's failed status polls on a
# cluster without job accounting (3 copies each; it learns a trial's end from its result file: docs/cluster.md)
DROPPED_LINES = {"lightning.pytorch.utilities.rank_zero": "💡 Tip:", "submitit": "Bypassing sacct error"}


def _drop_lines(record: logging.LogRecord) -> bool:
    """A logging filter: False for a line ``DROPPED_LINES`` drops."""
    text = DROPPED_LINES.get(record.name)
    return text is None or text not in record.getMessage()


def quiet_console() -> None:
    """Keep Lightning's messages but print each one once, drop its tips and submitit's failed accounting polls, and
    ignore ``IGNORED_WARNINGS``.

    ``import lightning`` gives its loggers console handlers of their own (and stops them from propagating when
    the root logger had no handlers yet). When the root logger has handlers (Hydra's console and the run's log
    file) Lightning's are removed and its messages go to the root's, so each is printed once and reaches the
    log file: call this after Lightning is imported. Safe to call repeatedly.
    """
    if logging.getLogger().handlers:
        for name in LIGHTNING_LOGGERS:
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
