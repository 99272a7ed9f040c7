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


def _run_id() -> str:
    """A run-directory name that is unique even for runs started in the same second."""
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"


OmegaConf.register_new_resolver("run_id", _run_id, use_cache=True, replace=True)


@hydra.main(version_base="1.3", config_path="pkg://apa_lightning.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train and test one configuration (``task=train``; returns ``cfg.optimized_metric`` for sweepers), or
    summarise the dataset (``task=eda``)."""
    from apa_lightning.eda import explore
    from apa_lightning.errors import ApaError
    from apa_lightning.run import train, user_error

    tasks = {"train": train, "eda": explore}

    # `import lightning` adds a console handler of its own; Hydra's root handlers already print to the
    # console and to the run's log file, so without this every Lightning message appears twice.
    for handler in list(logging.getLogger("lightning").handlers):
        logging.getLogger("lightning").removeHandler(handler)
    try:
        if cfg.task not in tasks:
            raise ApaError(f"task={cfg.task} is not a task; use one of {', '.join(tasks)}.")
        return tasks[cfg.task](cfg)
    except Exception as exc:  # only errors the user can fix are turned into a message
        message = user_error(exc)
        if message is None:
            raise
        print(f"\nerror: {message}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
