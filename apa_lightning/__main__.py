"""Command-line entry: ``python -m apa_lightning [overrides]``.

Only Hydra is imported here so that ``--help`` and ``--cfg job`` answer without loading torch;
the training code is imported inside the task.
"""

import logging
import secrets
import sys
import time

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("apa_lightning")

# task -> "module:function" taking the composed config; the module is imported only when its task runs.
TASKS = {
    "train": "apa_lightning.run:train",
    "eda": "apa_lightning.eda:explore",
}


def _run_id() -> str:
    """A run-directory name that is unique even for runs started in the same second."""
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"


def _optuna_direction(mode: str) -> str:
    """Optuna's name for ``optimized_mode``."""
    return {"min": "minimize", "max": "maximize"}[mode]


OmegaConf.register_new_resolver("run_id", _run_id, use_cache=True, replace=True)
OmegaConf.register_new_resolver("optuna_direction", _optuna_direction, replace=True)


@hydra.main(version_base="1.3", config_path="pkg://apa_lightning.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train and test one configuration (``task=train``; returns ``cfg.optimized_metric`` for sweepers), or
    summarise the dataset (``task=eda``).

    In a sweep a failed trial is logged with its error (and recorded in its ``metrics.json``) and returns None,
    so the other trials go on and an Optuna study marks it failed; a single run exits with status 1.
    """
    import importlib

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if cfg.task not in TASKS:
        print(f"\nerror: task={cfg.task} is not a task; use one of {', '.join(TASKS)}.", file=sys.stderr)
        raise SystemExit(1)
    from apa_lightning.run import user_error

    # `import lightning` adds a console handler of its own; Hydra's root handlers already print to the
    # console and to the run's log file, so without this every Lightning message appears twice.
    for handler in list(logging.getLogger("lightning").handlers):
        logging.getLogger("lightning").removeHandler(handler)
    try:
        module, function = TASKS[cfg.task].split(":")
        return getattr(importlib.import_module(module), function)(cfg)
    except Exception as exc:
        message = user_error(exc)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("Trial %s failed: %s", HydraConfig.get().job.num, message, exc_info=message is None)
            return None  # not a number: the Optuna sweeper records a failed trial (a NaN would crash it)
        if message is None:  # a bug, not a bad command: show the traceback
            raise
        print(f"\nerror: {message}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
