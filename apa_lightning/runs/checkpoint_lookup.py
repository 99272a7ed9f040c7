"""Where ``task=eval`` and ``task=predict`` take their checkpoint from (a checkpoint file or a run directory), and
the command line that gives them the data config of the checkpoint's run. Torch-free: used before Hydra starts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from apa_lightning.errors import ApaError
from apa_lightning.runs.files import read_json_record, read_yaml

CHECKPOINT_TASKS = ("eval", "predict")
CHECKPOINT_FOLDERS = ("checkpoints", "weights")  # <run dir>/checkpoints/*.ckpt, YOLO's <run dir>/weights/*.pt
# the run's overrides that say what it was asked to do and where: an evaluation or prediction sets its own
NOT_CARRIED = ("task", "task_name", "resume", "ckpt_path", "input", "hydra")
# the data keys that fix the images the network takes: a checkpoint is refused by a data config that sets them
# otherwise (trained_model.check_data_fits), and they are carried when the command line picks another data config
INPUT_KEYS = ("image_size", "image_width", "channels", "normalize", "mean", "std", "value_range")
PLAIN_VALUE = re.compile(r"[\w./:@%~+-]*")  # an override value that Hydra's grammar reads as it is
TRIALS_LISTED = 10  # trials of a sweep named in the message for resume=<sweep directory>


def override_key(argument: str) -> str:
    """The key of an override ``key=value`` (``+key``, ``++key`` and ``~key`` alike)."""
    return argument.split("=", 1)[0].lstrip("+~")


def unquoted(value: str) -> str:
    """An override value without the quotes Hydra's grammar may need around it (``hydra_value`` undone: an
    escaped quote, and the backslashes doubled before a quote or at the end, as Hydra reads them)."""
    if len(value) < 2 or value[0] != value[-1] or value[0] not in "'\"":
        return value
    quote = value[0]
    return re.sub(rf"(\\+)({quote}|$)", lambda m: "\\" * (len(m[1]) // 2) + m[2], value[1:-1])


def hydra_value(path: str | Path) -> str:
    """``path`` as an override value: as it is when Hydra's grammar reads it so, else in single quotes with a quote
    and the backslashes before it or at the end escaped (the ``=`` and ``,`` of a sweep job's directory such as
    ``3_lr=0.001,dropout=0.3``, spaces, quotes)."""
    text = str(path)
    if PLAIN_VALUE.fullmatch(text):
        return text
    escaped = re.sub(r"(\\*)(')", lambda m: 2 * m[1] + "\\'", text)
    return "'" + re.sub(r"(\\+)$", lambda m: 2 * m[1], escaped) + "'"


def _group(argument: str) -> str:
    """The top-level key or config group an override sets: ``data`` for ``data=x``, ``data.a=1``, ``data/b=c``."""
    return override_key(argument).split(".", 1)[0].split("/", 1)[0]


def run_directory(path: Path) -> Path | None:
    """The run directory of this tool that ``path`` is, or whose ``checkpoints/`` (``weights/``) holds it; None
    when it is neither."""
    for candidate in (path, path.parent.parent if path.parent.name in CHECKPOINT_FOLDERS else None):
        if candidate is not None and (candidate / ".hydra" / "overrides.yaml").is_file():
            return candidate
    return None


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a run directory stands for: its ``metrics.json``'s ``best_checkpoint`` (looked up in the
    directory itself first, which may have moved since), else ``checkpoints/last.ckpt``; a detection run's
    ``weights/best.pt``, else ``weights/last.pt``. Raises ApaError when it holds none or its metrics.json is
    damaged."""
    candidates = []
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        fix = f"Pass the checkpoint itself, e.g. ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}."
        best = read_json_record(metrics, fix).get("best_checkpoint")
        if best:
            candidates += [run_dir / Path(best).parent.name / Path(best).name, Path(best)]
    candidates += [run_dir / "checkpoints" / "last.ckpt", *(run_dir / "weights" / n for n in ("best.pt", "last.pt"))]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ApaError(
            f"ckpt_path={run_dir} holds no checkpoint (no best_checkpoint in metrics.json, no checkpoints/last.ckpt, "
            "no weights/best.pt): pass the directory of a training run that finished at least one epoch, or a "
            ".ckpt file."
        )
    return found


def checkpoint_file(ckpt_path: str | None, task: str) -> Path:
    """The checkpoint ``ckpt_path`` names for ``task``: the file itself, or a directory's (``run_checkpoint``).
    Raises ApaError when it is unset, missing or holds none."""
    if not ckpt_path:
        raise ApaError(
            f"task={task} needs ckpt_path=<a .ckpt file or a run directory>, e.g. "
            "ckpt_path=outputs/runs/<name>/<id> (its best checkpoint)."
        )
    path = Path(ckpt_path).expanduser().resolve()
    if path.is_dir():
        refuse_sweep_directory(path, "ckpt_path")
        return run_checkpoint(path)
    if not path.is_file():
        raise ApaError(
            f"ckpt_path={ckpt_path} does not exist; pass a .ckpt file or a run directory such as "
            "outputs/runs/<name>/<id>."
        )
    return path


def _data_config_keys(name: str) -> set[str] | None:
    """The top-level keys of this tool's data config ``name`` (``conf/data/<name>.yaml``), or None when it has no
    such file (a config of the user's search path): only font's has ``image_width``, only flowers' ``value_range``."""
    from importlib.resources import files

    path = files("apa_lightning.conf") / "data" / f"{name}.yaml"
    if not path.is_file():
        return None
    config = OmegaConf.create(path.read_text())
    return set(config) if isinstance(config, DictConfig) else None


def _given_task_name(run_dir: Path) -> str | None:
    """The ``task_name`` the run was given (``task_name=my_exp``) as its saved config holds it, or None when it
    kept the default (an interpolation there) or has no saved config."""
    config = run_dir / ".hydra" / "config.yaml"
    saved = read_run_config(run_dir) if config.is_file() else {}
    name = saved.get("task_name") if isinstance(saved, dict) else None
    return str(name) if name and "${" not in str(name) else None


def read_run_config(run_dir: Path) -> Any:
    """The plain content of the run's ``.hydra/config.yaml``. Raises ApaError when it is damaged."""
    return read_yaml(
        run_dir / ".hydra" / "config.yaml",
        "It is the run's composed config, written when the run started: restore it from a copy of the run, or pass "
        "the checkpoint file itself (ckpt_path=<run dir>/checkpoints/<name>.ckpt) with the data config on the "
        "command line (data=...).",
    )


SWITCHED_OFF = re.compile(r"callbacks\.\w+=(?i:null)")


def read_overrides(run_dir: Path) -> list[str]:
    """The run's own command-line overrides, from its ``.hydra/overrides.yaml``. Raises ApaError when the file is
    missing, damaged, or not a list of ``key=value`` texts."""
    path = run_dir / ".hydra" / "overrides.yaml"
    fix = (
        "It lists the run's own overrides, which resume=, task=eval and task=predict bring back: recreate it as a "
        "YAML list with one '- key=value' line per override (.hydra/hydra.yaml lists them under "
        "hydra.overrides.task)."
    )
    if not path.is_file():
        raise ApaError(f"{path} is missing, so {run_dir} cannot go on with the settings it was started with. {fix}")
    overrides = read_yaml(path, fix)
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ApaError(f"{path} is damaged: it holds no list of overrides. {fix}")
    # a callback switched off (callbacks.image_grids=null) that the config may no longer hold: runs of earlier
    # versions had every family's callbacks (callbacks/family/), so the key is added, switched off, if missing
    return [f"++{o}" if SWITCHED_OFF.fullmatch(o) else o for o in overrides]


def sweep_trials(directory: Path) -> list[Path]:
    """The run directories right inside ``directory`` (a sweep's trials, the runs of one task name), in job
    order."""
    from apa_lightning.runs.names import job_number  # run_names imports this module

    trials = [p.parent.parent for p in directory.glob("*/.hydra/overrides.yaml")]
    return sorted(trials, key=lambda p: (job_number(p) is None, job_number(p) or 0, p.name))


def refuse_sweep_directory(directory: Path, key: str) -> None:
    """Raise ApaError when ``directory`` (given as ``key=``) is a sweep's directory rather than one run's, naming
    its trials and their status."""
    if (directory / ".hydra" / "overrides.yaml").is_file():
        return
    trials = sweep_trials(directory)
    if not trials and not (directory / "multirun.yaml").is_file():
        return
    listed = []
    for trial in trials[:TRIALS_LISTED]:
        metrics = trial / "metrics.json"
        try:
            status = read_json_record(metrics, "").get("status", "?") if metrics.is_file() else "unfinished"
        except ApaError:
            status = "metrics.json damaged"
        listed.append(f"{trial.name} ({status})")
    more = f", ... ({len(trials)} in all)" if len(trials) > TRIALS_LISTED else ""
    example = f"e.g. {shlex.quote(f'{key}={trials[0]}')}" if trials else "none has started"
    if (directory / "multirun.yaml").is_file():
        what, kind = "a sweep's directory", "trials"
    else:
        what, kind = "a folder of runs", "runs"
    listing = f" Its {kind}: {', '.join(listed)}{more}." if trials else ""
    raise ApaError(
        f"{key}={directory} is {what}, not one run's: pass the directory of one of its {kind} ({example}).{listing}"
    )


def missing_overrides(run_dir: Path) -> bool:
    """Whether ``run_dir`` looks like a run directory of this tool (a ``.hydra/`` folder or a ``metrics.json``)
    that lost its ``.hydra/overrides.yaml``."""
    if (run_dir / ".hydra" / "overrides.yaml").is_file():
        return False
    return (run_dir / ".hydra").is_dir() or (run_dir / "metrics.json").is_file()


def checkpoint_arguments(argv: list[str]) -> list[str]:
    """The command line of ``task=eval`` / ``task=predict`` with ``ckpt_path`` in a run directory of this tool.

    ``ckpt_path`` becomes the checkpoint file (``run_checkpoint`` for a directory), and the run's own overrides
    are added (except those the command line sets again and ``NOT_CARRIED``), so the data config (and YOLO's
    model config) is the run's. A command line that picks another data config (``data=x``) drops the run's data
    overrides but keeps the network's input (``INPUT_KEYS`` from the run's config that the new data config has)
    unless it sets those too. The evaluation of a run that was given a ``task_name`` is named ``eval_<that name>``
    unless the command line names it. Outside a run directory, unless a model or experiment is named, a ``.pt`` gets
    ``model=yolo`` (``task=predict``) and any other checkpoint ``~model``: its model comes from the checkpoint
    itself, so the run's config names no model config and its name none (``eval_<data>``, ``predict``). Other
    command lines are returned unchanged; the task reports a bad ``ckpt_path``.
    """
    values = {override_key(a): unquoted(a.split("=", 1)[1]) for a in argv if "=" in a and not a.startswith("-")}
    if values.get("task") not in CHECKPOINT_TASKS or not values.get("ckpt_path"):
        return argv
    given = Path(values["ckpt_path"]).expanduser()
    run_dir = run_directory(given.resolve())
    at = next(i for i, a in enumerate(argv) if override_key(a) == "ckpt_path")
    if run_dir is None:
        resolved = given.resolve()
        for candidate in (resolved, resolved.parent.parent if resolved.parent.name in CHECKPOINT_FOLDERS else None):
            if candidate is not None and candidate.is_dir() and missing_overrides(candidate):
                read_overrides(candidate)  # raises: without them the run's own settings would be silently dropped
        if {_group(a) for a in argv if "=" in a or a.startswith("~")} & {"model", "experiment"}:
            return argv
        if given.suffix != ".pt":
            return [*argv[: at + 1], "~model", *argv[at + 1 :]]
        return [*argv[: at + 1], "model=yolo", *argv[at + 1 :]] if values["task"] == "predict" else argv
    try:
        checkpoint = given.resolve() if given.is_file() else run_checkpoint(run_dir)
    except ApaError:
        return argv
    switched = "data" in values
    carried = [
        o
        for o in read_overrides(run_dir)
        if override_key(o) not in values and _group(o) not in NOT_CARRIED and not (switched and _group(o) == "data")
    ]
    if switched:
        saved = read_run_config(run_dir)
        data = (saved.get("data") if isinstance(saved, dict) else None) or {}
        keys = _data_config_keys(values["data"])
        carried += [
            f"data.{k}={data[k]}"
            for k in INPUT_KEYS
            if f"data.{k}" not in values
            and data.get(k) is not None  # an unset key (data.mean without normalize=fixed) keeps the new config's
            and "${" not in str(data[k])
            and (keys is None or k in keys)
        ]
    multirun = any(a in ("-m", "--multirun") for a in argv)
    name = _given_task_name(run_dir) if values["task"] == "eval" and "task_name" not in values else None
    return [
        *argv[:at],
        f"ckpt_path={hydra_value(checkpoint)}",
        *([f"task_name={hydra_value(f'eval_{name}')}"] if name else []),
        *carried,
        *([] if multirun else ["hydra.mode=RUN"]),
        *argv[at + 1 :],
    ]
