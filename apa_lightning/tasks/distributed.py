"""Multi-process details: which GPU a sweep trial uses, and how Lightning's DDP re-launches a Hydra job."""

from __future__ import annotations

import dis
import importlib
import inspect
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from typing import TYPE_CHECKING

import __main__
from apa_lightning.errors import ApaError, Interrupted

if TYPE_CHECKING:  # lightning is imported when a run needs it: the command line starts without it
    import lightning as L

log = logging.getLogger(__name__)

# What Lightning's DDP launcher writes into the launching process's environment.
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def trial_devices(job_num: int, gpu_count: int) -> list[int]:
    """The one GPU a single-device sweep trial runs on: trials are dealt round-robin over the GPUs, so
    parallel trials (``hydra/launcher=joblib``) do not share one."""
    return [job_num % gpu_count]


def hydra_ddp_child_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command that starts DDP rank ``local_rank`` of the current Hydra job, and its working directory.

    Lightning's own version re-runs ``sys.argv``, which in a sweep (``-m a=1,2``) starts the whole sweep again
    in every rank and writes into a new run directory. This one re-runs only this job's overrides in this
    job's directory, in run mode (even when the job comes from a preset sweep), without writing a second
    ``.hydra`` folder.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    module = getattr(__main__.__spec__, "name", None)
    command = [sys.executable, "-m", module] if module else [sys.executable, sys.argv[0]]
    command += [*hydra_cfg.overrides.task, f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"']
    # hydra.mode=RUN: a preset sweep (hparams_search=...) in the overrides would otherwise start a sweep again
    command += [f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}", "hydra.output_subdir=null", "hydra.mode=RUN"]
    return command, get_original_cwd()


def srun_rank_overrides() -> list[str]:
    """The overrides that rank N > 0 of a job step srun started with several tasks adds to its command line.

    There every rank runs the same command (``srun python -m apa_lightning trainer=ddp ...``, DDP over the tasks)
    and finds the same run directory (``cli.main._run_id``); like the ranks Lightning starts itself
    (``hydra_ddp_child_command``) it logs into ``run_rankN.log`` and leaves ``.hydra`` to rank 0.
    """
    rank = int(os.environ.get("SLURM_PROCID") or 0)
    if rank == 0 or int(os.environ.get("SLURM_NTASKS") or 1) < 2:
        return []
    return [f"hydra.job.name=run_rank{rank}", "hydra.output_subdir=null"]


# Where Lightning (2.6) builds the command of the DDP ranks it starts in a Hydra job: its launcher class
# ``_SubprocessScriptLauncher`` calls this module's function ``_hydra_subprocess_cmd``, looked up at call time.
LAUNCHER_MODULE = "lightning.pytorch.strategies.launchers.subprocess_script"
LAUNCHER_COMMAND = "_hydra_subprocess_cmd"


def launcher_calls_job_command() -> bool:
    """Whether Lightning's DDP launcher still builds a Hydra job's rank command with
    ``LAUNCHER_MODULE.LAUNCHER_COMMAND``, so that rebinding that name changes the command."""
    try:
        module = importlib.import_module(LAUNCHER_MODULE)
    except ImportError:
        return False
    launcher = getattr(module, "_SubprocessScriptLauncher", None)
    methods = vars(launcher).values() if isinstance(launcher, type) else ()
    # looked up as the module's global (not an attribute of something else, which rebinding would not change)
    calls = any(
        i.opname == "LOAD_GLOBAL" and i.argval == LAUNCHER_COMMAND
        for m in methods
        if inspect.isfunction(m) and m.__globals__ is vars(module)
        for i in dis.get_instructions(m)
    )
    return calls and callable(getattr(module, LAUNCHER_COMMAND, None))


def use_job_command_for_ddp_children(trainer: L.Trainer) -> None:
    """Make Lightning start the DDP ranks of this Hydra job with ``hydra_ddp_child_command``.

    A private hook: Lightning has no public way to choose that command (its launchers are private, and a custom
    launcher is not supported: Lightning-AI/pytorch-lightning#15689), and its own re-runs the whole sweep in every
    rank. So the name its launcher calls is rebound, after checking that the launcher still calls it
    (``launcher_calls_job_command``; tests/test_library_contracts.py pins it). Raises ApaError when it does not and
    this run would start DDP ranks itself: never a silent re-run of the sweep.
    """
    if launcher_calls_job_command():
        setattr(importlib.import_module(LAUNCHER_MODULE), LAUNCHER_COMMAND, hydra_ddp_child_command)
        return
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if trainer.num_devices > 1 and environment is not None and not environment.creates_processes_externally:
        raise ApaError(
            f"lightning {version('lightning')} no longer starts DDP ranks through "
            f"{LAUNCHER_MODULE}.{LAUNCHER_COMMAND}, which this tool replaces so that each rank runs only its own "
            "Hydra job (Lightning's own command starts the whole command line, a sweep included, again in every "
            "rank). Install the Lightning version the tests passed with (make install), train on one device "
            "(trainer.devices=1), or start the ranks with srun (docs/cluster.md)."
        )


@contextmanager
def ddp_job_scope() -> Iterator[None]:
    """Run one job so that the next one in this process (the next trial of a sweep) starts its own DDP ranks:
    afterwards, the launcher's environment variables are restored and the process group is destroyed.
    (Left behind, they make Lightning believe the next job was launched externally, with the dead ranks.)"""
    import torch.distributed as dist

    saved = {name: os.environ.get(name) for name in LAUNCH_VARIABLES}
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def slurm_job_id() -> str | None:
    """This SLURM job's id as ``scontrol`` takes it (``<array job>_<task>`` in a job array), None outside SLURM."""
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID")


@contextmanager
def requeue_on_sigusr1() -> Iterator[None]:
    """While inside, in a SLURM job, SIGUSR1 (``#SBATCH --signal=B:USR1@120``: the time limit is near) requeues the
    job (``scontrol requeue``): SLURM stops it with SIGTERM, recorded as an interruption, and starts it again, and
    the run continues from its ``last.ckpt`` (``run.requeued_checkpoint``). When the requeue is refused the run
    stops as on SIGTERM (exit 138).

    Without this, SIGUSR1 ends a run that srun did not start at once, with no record (Python's default action);
    in a job step srun started, Lightning's handler would save an ``hpc_ckpt_N.ckpt`` this tool never reads.
    """
    job = slurm_job_id()
    if job is None:
        yield
        return

    def requeue(signum: int, frame: object) -> None:
        if int(os.environ.get("SLURM_PROCID") or 0) != 0:  # DDP over srun's tasks: every rank gets it, rank 0 acts
            return
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if done.returncode != 0:
            log.error("SIGUSR1: scontrol requeue %s failed (%s); stopping.", job, done.stderr.strip())
            raise Interrupted(signum)
        log.info("SIGUSR1: requeued SLURM job %s; it continues from the last finished epoch.", job)

    previous = signal.signal(signal.SIGUSR1, requeue)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)
