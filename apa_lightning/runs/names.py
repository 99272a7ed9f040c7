"""Names of run directories: the default ``task_name`` and a sweep job's subdirectory. Torch-free.

Registers the resolvers ``${default_task_name:}`` (``conf/train.yaml``) and ``${job_subdir:}``
(``conf/hydra/default.yaml``) when imported; ``apa_lightning/__init__.py`` imports it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from apa_lightning.errors import ApaError
from apa_lightning.runs.checkpoint_lookup import override_key

MAX_JOB_NAME = 120  # characters of a sweep job's directory name, well under any file system's limit
UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]+")  # anything else in a value becomes "_"


def task_name_for(task: str, choices: Any) -> str:
    """The default run name: the experiment's name, else ``<model>_<data>`` (``ae_digits``); ``eda_<data>`` for
    ``task=eda``, ``predict_<model>`` for ``task=predict`` and ``eval_`` before the name for ``task=eval``.
    Without a model config (``~model``: the checkpoint of an evaluation or prediction outside a run directory
    brings its own model) ``eval_<data>`` and ``predict``. ``choices`` are Hydra's ``runtime.choices``."""
    model = choices.get("model")
    if task == "eda":
        return f"eda_{choices.get('data')}"
    if task == "predict":
        return f"predict_{model}" if model else "predict"
    # a config in a sub-folder (experiment=mine/quick) names one folder: mine_quick
    name = choices.get("experiment") or "_".join(str(c) for c in (model, choices.get("data")) if c)
    name = name.replace("/", "_")
    return f"eval_{name}" if task == "eval" else name


def _hydra_node(root: DictConfig) -> Any:
    """The ``hydra`` node of a composed config, or the running job's (a task's config has none)."""
    from hydra.core.hydra_config import HydraConfig

    if "hydra" in root:
        return root.hydra
    if HydraConfig.initialized():
        return HydraConfig.get()
    raise ApaError(
        "task_name cannot be derived outside a Hydra run; compose with return_hydra_config or set task_name."
    )


def default_task_name(*, _root_: DictConfig) -> str:
    """Resolver ``${default_task_name:}``: ``task_name_for`` of the config's task and group choices."""
    return task_name_for(_root_.task, _hydra_node(_root_).runtime.choices)


def swept_keys(hydra: Any) -> list[str]:
    """The keys a sweep varies, in Hydra's order: those of ``hydra.sweeper.params`` (a preset), then those given
    with a sweep on the command line (``model.optimizer.lr=1e-3,1e-4``), read from the ``multirun.yaml`` that the
    sweep writes in its directory before any job starts (a preset's key given a single value there is not swept).
    Outside a multirun, only the preset's keys."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.types import RunMode

    keys = [str(k) for k in (hydra.sweeper.get("params") or {})]
    multirun = Path(str(hydra.sweep.dir)) / "multirun.yaml" if hydra.mode == RunMode.MULTIRUN else None
    if multirun is not None and multirun.is_file():
        for override in OmegaConf.load(multirun).hydra.overrides.task:
            try:
                (parsed,) = OverridesParser.create().parse_overrides([override])
            except HydraException:  # e.g. glob(...), which needs the configs: not a plain choice sweep
                continue
            if not parsed.is_sweep_override():  # a single value given for a preset's swept key: no longer swept
                keys = [k for k in keys if k != parsed.key_or_group]
            elif parsed.key_or_group not in keys:
                keys.append(parsed.key_or_group)
    return keys


def sweep_context() -> tuple[list[str], dict[str, Any]]:
    """The keys the running job's sweep varies (``swept_keys``) and Hydra's group choices of the job; both empty
    outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [], {}
    hydra = HydraConfig.get()
    return swept_keys(hydra), dict(hydra.runtime.choices)


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key's shortest dotted tail that no other key shares (``model.optimizer.lr`` -> ``lr``)."""
    parts = {key: re.split(r"[./]", key) for key in keys}
    names = {}
    for key, own in parts.items():
        for n in range(1, len(own) + 1):
            tail = own[-n:]
            if not any(other[-n:] == tail for k, other in parts.items() if k != key) or n == len(own):
                names[key] = ".".join(tail)
                break
    return names


def short_value(value: str) -> str:
    """A decimal number written longer than 8 characters to 4 significant digits (an Optuna trial's
    0.000123456789... -> 0.0001235); any other value, integers too (seed=1234567890), as it is."""
    if len(value) <= 8 or re.fullmatch(r"[+-]?[\d_]+", value):
        return value
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def _value_text(value: str) -> str:
    short = short_value(value)
    return short if short != value else UNSAFE.sub("_", value)


def job_subdir_name(num: int, swept: list[str], overrides: list[str]) -> str:
    """``<num>_<key>=<value>,...`` of the job's values of the swept keys (short names, file-system-safe, at most
    ``MAX_JOB_NAME`` characters), or ``<num>`` when nothing is swept."""
    values = {override_key(o): o.split("=", 1)[1] for o in overrides if "=" in o}
    names = short_names([k for k in swept if k in values])
    pairs = ",".join(f"{name}={_value_text(values[key])}" for key, name in names.items())
    return f"{num}_{pairs}"[:MAX_JOB_NAME] if pairs else str(num)


def job_subdir(*, _root_: DictConfig) -> str:
    """Resolver ``${job_subdir:}`` for ``hydra.sweep.subdir``: ``job_subdir_name`` of the job being launched
    (Hydra resolves the subdir with the job's own config, after the sweep wrote its ``multirun.yaml``)."""
    hydra = _root_.hydra
    return job_subdir_name(hydra.job.num, swept_keys(hydra), list(hydra.overrides.task))


def job_number(job_dir: Path) -> int | None:
    """The job number a sweep job's directory name starts with (``3`` of ``3_lr=0.001``), or None."""
    number = job_dir.name.split("_", 1)[0]
    return int(number) if number.isdigit() else None


OmegaConf.register_new_resolver("default_task_name", default_task_name, replace=True)
OmegaConf.register_new_resolver("job_subdir", job_subdir, replace=True)
