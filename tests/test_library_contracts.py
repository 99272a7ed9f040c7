"""Contracts with library internals: every private symbol of Lightning, ultralytics, Hydra ... the package still
relies on, because no public API does the same (each hook says why, in a comment where it is used).

A test here fails with the library's name, its installed version and the symbol (``broken``), so that an upgrade
that moves or changes one is caught by name instead of changing a run's behaviour quietly. One section per library;
add a hook's test to its library's section.
"""

from __future__ import annotations

from importlib.metadata import version


def broken(library: str, symbol: str, used_by: str) -> str:
    """The failure message of a contract test: ``<library> <installed version> no longer has <symbol>: <used_by>``."""
    return f"{library} {version(library)} no longer has {symbol}: {used_by}"


# ---------------------------------------------------------------------------------------------------- lightning


def test_lightning_ddp_launcher_builds_a_hydra_jobs_rank_command_with_the_function_we_replace():
    from apa_lightning.tasks.distributed import LAUNCHER_COMMAND, LAUNCHER_MODULE, launcher_calls_job_command

    assert launcher_calls_job_command(), broken(
        "lightning",
        f"{LAUNCHER_MODULE}.{LAUNCHER_COMMAND} called by its _SubprocessScriptLauncher",
        "tasks/distributed.py starts each DDP rank of a Hydra job through it (else every rank re-runs the sweep)",
    )
