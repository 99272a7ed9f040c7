"""Writing files so that a crash, a kill or a full disk never leaves a truncated file under a real name."""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from apa_lightning.errors import ApaError, describe, interruption, user_error

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(path: Path) -> str:
    """What to tell the user when writing ``path`` failed for lack of space."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return (
        f"the disk is full: writing {path} failed ({free} on that file system). Free some space there, or put the "
        "runs on another disk with paths.log_dir=/other/disk; finished epochs stay in the run's checkpoints/ "
        "(resume with resume=<run dir>)."
    )


def write_atomically(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file next to ``path``, flush it to disk, then rename it to ``path``.

    ``path`` is either left as it was or replaced whole. Raises ApaError when the disk is full; any other error
    propagates; the temporary file is removed in every case.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # unique per call
    try:
        with open(temporary, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise ApaError(disk_full_message(path)) from exc
        raise
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str) -> None:
    """``write_atomically`` for text (UTF-8)."""
    write_atomically(path, lambda f: f.write(text.encode()))


def write_metrics(path: str | Path, record: dict[str, Any]) -> None:
    """Write a run's ``metrics.json`` (sorted keys, indented) atomically."""
    write_text_atomically(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def run_record(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """The start of a run's ``metrics.json``: status ``running`` and what identifies the run in a sweep summary."""
    return {
        "status": "running",
        "task_name": cfg.get("task_name"),
        "tags": list(cfg.get("tags") or []),
        "optimized_metric": cfg.get("optimized_metric"),
        "optimized_mode": cfg.get("optimized_mode"),
        "run_dir": str(run_dir),
    }


def record_failure(record: dict[str, Any], exc: BaseException) -> None:
    """Mark ``record`` as ended by ``exc``: ``interrupted`` with the signal's name, or ``failed`` with the
    user-facing message (``Type: message`` for an unexpected error)."""
    signal_name = interruption(exc)
    record["status"] = "interrupted" if signal_name else "failed"
    if signal_name:
        record["signal"] = signal_name
    record["error"] = f"interrupted by {signal_name}" if signal_name else (user_error(exc) or describe(exc))
