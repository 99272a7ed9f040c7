"""Command-line entry: ``python -m apa_lightning [overrides]``.

Only Hydra is imported here so that ``--help`` and ``--cfg job`` answer without loading torch;
the training code is imported inside the task.
"""

import hashlib
import logging
import secrets
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from apa_lightning.cli.config_checks import check_before_task
from apa_lightning.cli.console import quiet_console
from apa_lightning.cli.install_check import broken_install
from apa_lightning.cli.overrides import check_overrides
from apa_lightning.errors import ApaError, Interrupted, describe, user_error
from apa_lightning.runs.checkpoint_lookup import (
    checkpoint_arguments,
    hydra_value,
    missing_overrides,
    override_key,
    read_overrides,
    refuse_sweep_directory,
    unquoted,
)
from apa_lightning.runs.lock import RunInUse, RunLock, is_launching_process
from apa_lightning.runs.record import record_refused, to_log_file
from apa_lightning.tasks import TASKS
from apa_lightning.tasks.distributed import requeue_on_sigusr1, slurm_job_id, srun_rank_overrides

log = logging.getLogger("apa_lightning")


def _run_id() -> str:
    """A run-directory name that is unique even for runs started in the same second.

    In a SLURM job it is ``slurm<job id>_<hash of the command line>`` instead: when SLURM requeues the job (a
    preempted node, Lightning's requeue on SIGUSR1), the same command finds the same directory and continues it
    (see ``run.requeued_checkpoint``), while different commands of one job script keep directories of their own.
    """
    job = slurm_job_id()
    if job:
        command = [a for a in sys.argv[1:] if a not in srun_rank_overrides()]  # every rank of a step: one directory
        return f"slurm{job}_{hashlib.sha1(' '.join(command).encode()).hexdigest()[:6]}"
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"


def _optuna_direction(mode: str) -> str:
    """Optuna's name for ``optimized_mode``."""
    return {"min": "minimize", "max": "maximize"}[mode]


OmegaConf.register_new_resolver("run_id", _run_id, use_cache=True, replace=True)
OmegaConf.register_new_resolver("optuna_direction", _optuna_direction, replace=True)

RESUME_KEYS = ("resume", "ckpt_path", "hydra.run.dir")
RESUMABLE = ("last.ckpt", "last.pt")  # <run dir>/checkpoints/last.ckpt, YOLO's <run dir>/weights/last.pt
TRAINING = ("train", "detect")  # the tasks a resume continues (not predict, which only reads a checkpoint)


def _with_path_quoted(argument: str) -> str:
    key, _, value = argument.partition("=")
    return f"{key}={hydra_value(unquoted(value))}" if override_key(argument) in ("resume", "ckpt_path") else argument


def resumed_arguments(argv: list[str]) -> list[str]:
    """The command line of a run that continues another one.

    With ``resume=<run dir>`` or ``ckpt_path=<run dir>/checkpoints/last.ckpt`` (YOLO: ``weights/last.pt``) in a
    single training run, the run directory's own overrides are added (those the command line does not set again)
    and ``hydra.run.dir`` points at it: the run goes on where and as it was, writing into the same directory.
    Other command lines (sweeps, other checkpoints, ``task=predict``) are returned unchanged.
    """
    values = {override_key(a): unquoted(a.split("=", 1)[1]) for a in argv if "=" in a and not a.startswith("-")}
    if any(a in ("-m", "--multirun") for a in argv) or values.get("task", "train") not in TRAINING:
        return argv
    if values.get("resume"):
        run_dir = Path(values["resume"])
        refuse_sweep_directory(run_dir, "resume")
    elif values.get("ckpt_path") and Path(values["ckpt_path"]).name in RESUMABLE:
        run_dir = Path(values["ckpt_path"]).parent.parent
    else:
        return argv
    if not (run_dir / ".hydra" / "overrides.yaml").is_file() and not missing_overrides(run_dir):
        return argv  # not a run directory of this tool: the task says so
    given = set(values) | set(RESUME_KEYS)
    original = [o for o in read_overrides(run_dir) if override_key(o) not in given]
    # next to the resume argument: argparse wants the overrides in one run, not split by a flag such as --cfg
    at = next(i for i, a in enumerate(argv) if override_key(a) in ("resume", "ckpt_path")) + 1
    # hydra.mode=RUN: a trial of a preset sweep (hparams_search=...) would otherwise start the whole sweep again
    quoted = [_with_path_quoted(a) for a in argv]
    run_dir_argument = f"hydra.run.dir={hydra_value(str(run_dir.resolve()))}"
    return [*quoted[:at], *original, run_dir_argument, "hydra.mode=RUN", *quoted[at:]]


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """While inside, SIGTERM, SIGINT and SIGHUP (a closed terminal, a dropped ssh session) raise ``Interrupted``
    (in the main thread), so the run records why it stopped and the process exits with 143 / 130 / 129 instead of
    0. A SIGHUP that the process was started ignoring (``nohup``) stays ignored."""

    def interrupt(signum: int, frame: object) -> None:
        for ignored in previous:  # a second Ctrl-C must not break the clean-up (restored on the way out)
            signal.signal(ignored, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    if previous[signal.SIGHUP] == signal.SIG_IGN:
        del previous[signal.SIGHUP]
    for signum in previous:
        signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@hydra.main(version_base="1.3", config_path="pkg://apa_lightning.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run ``cfg.task`` (see ``tasks.TASKS``): train and test one configuration (``task=train``, ``detect``;
    returns the best ``cfg.optimized_metric`` for sweepers), summarise the dataset (``eda``), test a checkpoint
    (``eval``), or predict with one (``predict``).

    A failure the task did not record (refused at start, before its ``metrics.json``) is recorded there, status
    ``failed`` with the error. In a sweep a failed trial is logged with its error and returns None, so the other
    trials go on and an Optuna study marks it failed; a single run exits with status 1.
    """
    import importlib

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    output_dir = Path(HydraConfig.get().runtime.output_dir)

    try:
        with signals_interrupt(), requeue_on_sigusr1():
            check_before_task(cfg)  # a sweep trial's own values; a single run was checked before its directory
            module, function = TASKS[cfg.task].split(":")
            task = getattr(importlib.import_module(module), function)
            quiet_console()  # after the task's imports: `import lightning` adds a second console handler
            return task(cfg)
    except Interrupted as exc:
        to_log_file(
            f"Interrupted by {exc.signal_name}; the finished epochs are kept in {output_dir}.", logging.ERROR, log
        )
        if sweep:
            from apa_lightning.tasks.sweep_summary import recorded_order, write_summary

            sweep_dir = Path(HydraConfig.get().sweep.dir)
            write_summary(sweep_dir, *recorded_order(sweep_dir))
            print(f"\nSweep interrupted by {exc.signal_name}: {sweep_dir / 'summary.md'}", file=sys.stderr)
        resumable = any(
            (output_dir / folder / name).is_file()
            for folder, name in (("checkpoints", "last.ckpt"), ("weights", "last.pt"))
        )
        hint = f"finished epochs are kept; continue with python -m apa_lightning {shlex.quote(f'resume={output_dir}')}"
        outcome = hint if resumable else "no epoch had finished"
        try:
            print(f"\nInterrupted by {exc.signal_name}: {outcome}", file=sys.stderr)
        except OSError:  # after SIGHUP the terminal may be gone; run.log has the line above
            pass
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:
        message = user_error(exc) or broken_install(exc)
        to_log_file(f"Failed: {message or repr(exc)}", logging.ERROR, log)  # the console gets the error: paragraph
        error = message or describe(exc)
        # refused before the task recorded it; not by a DDP rank > 0 (rank 0 records the run), nor into a directory
        # that another live run holds
        unrecorded = output_dir.is_dir() and not (output_dir / "metrics.json").is_file()
        if unrecorded and is_launching_process() and not isinstance(exc, RunInUse):
            record_refused(cfg, output_dir, error)
        if sweep:
            log.error("Trial %s failed: %s", HydraConfig.get().job.num, error, exc_info=message is None)
            return None  # not a number: the Optuna sweeper records a failed trial (a NaN would crash it)
        if message is None:  # a bug, not a bad command: show the traceback
            raise
        print(f"\nerror: {message}", file=sys.stderr)
        raise SystemExit(1) from None


def cli() -> None:
    """``python -m apa_lightning`` / ``apa-lightning``: ``main`` on the command line, with ``resume=`` expanded and
    the ``ckpt_path`` of ``task=eval`` / ``task=predict`` given its run's config (``checkpoint_arguments``).
    Overrides the config cannot be composed with (an unknown key or config) end it with an ``error:`` paragraph
    and status 1 before Hydra makes a directory (``check_overrides``), and so does a resume of a run directory that
    another live run holds (``run_lock.RunLock``)."""
    quiet_console()  # a SLURM sweep's polls of sacct happen in this process
    given = sys.argv[1:]
    try:
        resumed = resumed_arguments(given)
        sys.argv = [sys.argv[0], *checkpoint_arguments(resumed), *srun_rank_overrides()]
        # a run directory in use by another run: refused before Hydra writes into it (not in the DDP ranks that
        # the run holding it starts with the same command)
        if resumed is not given and is_launching_process():
            run_dir = next(unquoted(a.split("=", 1)[1]) for a in resumed if a.startswith("hydra.run.dir="))
            RunLock(Path(run_dir)).refuse_if_in_use()
        check_overrides(sys.argv[1:])
    except ApaError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    main()


if __name__ == "__main__":
    cli()
