"""Reading checkpoints of this tool safely: plain values only, with clear errors for anything else."""

from __future__ import annotations

import inspect
import json
import logging
import shlex
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from apa_lightning.errors import ApaError
from apa_lightning.runs.record import read_run_record

log = logging.getLogger(__name__)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded with ``weights_only=True`` (never unpickling arbitrary objects).

    Raises ApaError when the file is not a Lightning checkpoint written by this tool.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for a foreign or damaged file
        raise ApaError(
            f"{path} is not a checkpoint of this tool (it cannot be read as one: {type(exc).__name__}); pass a .ckpt "
            "file from a run's checkpoints/ folder, e.g. <run dir>/checkpoints/last.ckpt."
        ) from exc
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= checkpoint.keys():
        raise ApaError(
            f"{path} is not a checkpoint of this tool (no state_dict and hyper_parameters); pass a .ckpt file from a "
            "run's checkpoints/ folder, e.g. <run dir>/checkpoints/last.ckpt."
        )
    return checkpoint


def intact_checkpoints(folder: Path, leave_out: Path | None = None) -> list[tuple[Path, int]]:
    """The checkpoints in ``folder`` (but ``leave_out``) that can be read, with their finished epochs, most epochs
    first."""
    found = []
    for path in folder.glob("*.ckpt") if folder.is_dir() else []:
        if leave_out is not None and path.resolve() == leave_out.resolve():
            continue
        try:
            found.append((path, finished_epochs(read_checkpoint(path))))
        except ApaError:
            continue
    return sorted(found, key=lambda item: (-item[1], item[0].name))


def _newest(kept: list[tuple[Path, int]]) -> str:
    path, epochs = kept[0]
    return f"its {path.parent.name}/ holds {path.name}, an intact checkpoint after {epochs} finished epoch(s)"


def _continue_from(path: Path) -> str:
    """How to continue a run from ``path``, another checkpoint of its own: make it the run's ``last.ckpt``."""
    run_dir, last = path.parent.parent, path.parent / "last.ckpt"
    return (
        f"to continue from it, copy it to last.ckpt ({shlex.join(['cp', str(path), str(last)])}) and run "
        f"{shlex.join(['python', '-m', 'apa_lightning', f'resume={run_dir}'])} again; the epochs after it are "
        "trained again."
    )


def read_resumed_checkpoint(path: Path) -> dict[str, Any]:
    """``read_checkpoint`` for a run to continue: when ``path`` cannot be read, the ApaError names the newest intact
    checkpoint beside it to continue from instead, or says that the run cannot be continued."""
    try:
        return read_checkpoint(path)
    except ApaError as exc:
        if not isinstance(exc.__cause__, Exception) or path.parent.name != "checkpoints":
            raise
        kept = intact_checkpoints(path.parent, leave_out=path)
        cause = type(exc.__cause__).__name__
        damaged = (
            f"{path} is damaged: it cannot be read as a checkpoint ({cause}; cut short by a full disk, a kill or an "
            "interrupted copy?)"
        )
        if kept:
            raise ApaError(f"{damaged}. But {_newest(kept)}: {_continue_from(kept[0][0])}") from exc
        raise ApaError(
            f"{damaged}, and no other checkpoint in {path.parent} is intact, so this run cannot be continued: start "
            "it again (the same command without resume=)."
        ) from exc


def networks(checkpoint: dict[str, Any], cfg: DictConfig) -> tuple[str | None, str | None]:
    """The ``_target_`` of the network ``checkpoint`` was made with, and of the one ``cfg.model`` builds (None
    without a model config: ``~model``)."""
    made_with = ((checkpoint.get("hyper_parameters") or {}).get("net") or {}).get("_target_")
    return made_with, OmegaConf.select(cfg, "model.net._target_", default=None)


def finished_epochs(checkpoint: dict[str, Any]) -> int:
    """How many training epochs the checkpoint's run had finished when it was saved.

    Lightning counts an epoch as processed before ``on_train_epoch_end``, where epoch-end checkpoints are saved.
    """
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return int(progress.get("processed", checkpoint.get("epoch", 0)))


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint to continue from: ``ckpt_path``, or ``<resume>/checkpoints/last.ckpt``; None for a new run.

    Raises ApaError when it is missing, not a checkpoint of this tool, made with another network, or has no
    epochs left to train within ``trainer.max_epochs``.
    """
    ckpt_path, resume = cfg.get("ckpt_path"), cfg.get("resume")
    if resume and not ckpt_path:
        if not Path(resume).is_dir():
            raise ApaError(f"resume={resume} does not exist; pass a run directory such as outputs/runs/<name>/<id>.")
        ckpt_path = str(Path(resume) / "checkpoints" / "last.ckpt")
        if not Path(ckpt_path).is_file():
            kept = intact_checkpoints(Path(ckpt_path).parent)
            if kept:
                raise ApaError(
                    f"resume={resume} has no checkpoints/last.ckpt, but {_newest(kept)}; {_continue_from(kept[0][0])}"
                )
            raise ApaError(
                f"resume={resume} has no checkpoints/last.ckpt: it is not a run directory of this tool, or the run "
                "stopped before its first epoch ended (then start it again)."
            )
    if not ckpt_path:
        return None
    if not Path(ckpt_path).is_file():
        raise ApaError(f"ckpt_path={ckpt_path} is not a file; pass one such as <run dir>/checkpoints/last.ckpt.")
    checkpoint = read_resumed_checkpoint(Path(ckpt_path))
    run_dir = Path(ckpt_path).parent.parent
    if Path(ckpt_path).parent.name == "checkpoints" and (run_dir / "metrics.json").is_file():
        read_run_record(run_dir / "metrics.json")  # the run extends it when it ends: refused now, not after training
    made_with, wanted = networks(checkpoint, cfg)
    if made_with != wanted:
        raise ApaError(
            f"ckpt_path={ckpt_path} was made with the network {made_with}, but model.net is {wanted}: a resumed run "
            "keeps its model; drop the model=/experiment= override (resume=<run dir> alone reuses the run's own "
            "config)."
        )
    changed = first_difference(checkpoint["hyper_parameters"], OmegaConf.to_container(cfg.model, resolve=True))
    if changed:
        key, then, now = changed
        raise ApaError(
            f"ckpt_path={ckpt_path} continues a run whose model.{key} was {then}, but it is {now} now; a resumed run "
            f"keeps its model and optimizer: set model.{key}={then} (a default may have changed since that run), or "
            "drop the override that changed it."
        )
    done, max_epochs = finished_epochs(checkpoint), cfg.trainer.get("max_epochs")
    if max_epochs is not None and max_epochs >= 0 and done >= max_epochs:
        if cfg.get("test") and untested_run(Path(ckpt_path)):
            log.info("%s had finished training, but not its test: testing it now.", ckpt_path)
            return str(ckpt_path)
        epochs = "1 epoch" if done == 1 else f"{done} epochs"
        raise ApaError(
            f"nothing left to train: {ckpt_path} has finished {epochs} and trainer.max_epochs={max_epochs}; "
            f"raise trainer.max_epochs (e.g. trainer.max_epochs={done + 10}) to train on."
        )
    return str(ckpt_path)


def untested_run(ckpt_path: Path) -> bool:
    """Whether ``ckpt_path`` is a run directory's ``checkpoints/last.ckpt`` (a resume continues that directory)
    whose ``metrics.json`` does not say it completed: its training ended, but its test was interrupted or failed."""
    if (ckpt_path.parent.name, ckpt_path.name) != ("checkpoints", "last.ckpt"):
        return False
    try:
        status = json.loads((ckpt_path.parent.parent / "metrics.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):  # no record, or a damaged one: the test will write it again
        return True
    return status != "completed"


def _defaults(target: Any) -> dict[str, Any]:
    """The constructor defaults of the class ``target`` names ({} when it cannot be imported)."""
    try:
        parameters = inspect.signature(get_class(str(target))).parameters
    except Exception:  # hydra raises several types for a name it cannot locate
        return {}
    return {k: p.default for k, p in parameters.items() if p.default is not inspect.Parameter.empty}


def first_difference(saved: Any, wanted: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first ``(dotted key, saved value, wanted value)`` where a checkpoint's hyperparameters and the model
    config disagree, or None. Config values left null (the module fills them in, e.g. ``value_range`` from the
    data) are not compared. A key of a ``_target_`` config that the checkpoint lacks (the network was saved before
    the key existed) is compared with that class's default, which is what the checkpoint was built with."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        defaults = _defaults(saved["_target_"]) if "_target_" in saved else {}
        for key, value in [*saved.items(), *((k, defaults[k]) for k in wanted.keys() - saved.keys() if k in defaults)]:
            difference = first_difference(value, wanted.get(key), f"{prefix}{key}.")
            if difference:
                return difference
        return None
    if isinstance(saved, (list, tuple)) and isinstance(wanted, (list, tuple)):
        saved, wanted = list(saved), list(wanted)
    return None if wanted is None or saved == wanted else (prefix.rstrip("."), saved, wanted)
