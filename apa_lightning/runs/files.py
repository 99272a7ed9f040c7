"""Writing files so that a crash, a kill or a full disk never leaves a truncated file under a real name."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from apa_lightning.errors import DISK_FULL, ApaError, describe


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


def _cause(exc: BaseException) -> str:
    """Where and why a JSON or YAML file could not be parsed, from the exception's attributes."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
    mark = getattr(exc, "problem_mark", None)  # yaml's MarkedYAMLError
    if mark is not None:
        return f"{getattr(exc, 'problem', None) or type(exc).__name__} (line {mark.line + 1}, column {mark.column + 1})"
    if isinstance(exc, UnicodeDecodeError):
        return f"byte {exc.start} is not UTF-8 text"
    return describe(exc)


def read_json_record(path: str | Path, fix: str) -> dict[str, Any]:
    """The JSON object in ``path`` (a run's ``metrics.json``, a conversion stamp). Raises ApaError naming the file,
    where it is damaged, and ``fix`` when it cannot be read or holds no JSON object."""
    path = Path(path)
    try:
        record = json.loads(path.read_bytes().decode())
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ApaError(f"{path} is damaged: it cannot be read as JSON ({_cause(exc)}). {fix}") from exc
    if not isinstance(record, dict):
        raise ApaError(f"{path} is damaged: it holds a JSON {type(record).__name__}, not an object. {fix}")
    return record


def read_yaml(path: str | Path, fix: str) -> Any:
    """The plain content (dicts, lists, values; interpolations kept as text) of the YAML file ``path``. Raises
    ApaError naming the file, where it is damaged, and ``fix`` when it cannot be parsed."""
    import yaml
    from omegaconf import OmegaConf

    path = Path(path)
    try:
        return OmegaConf.to_container(OmegaConf.load(path))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as exc:
        raise ApaError(f"{path} is damaged: it cannot be read as YAML ({_cause(exc)}). {fix}") from exc
