"""One process at a time per run directory, and a run that notices when its directory is taken away from it.

``RunLock`` writes ``<run dir>/run.lock`` (pid, host, SLURM job id, start time) for the life of a run, so that a
second ``resume=`` of the same directory is refused instead of interleaving its checkpoints, logs and records.
``directory_error`` says when the run directory was deleted, replaced or made read-only while the run was writing
into it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from apa_lightning.errors import ApaError, chain

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
# the variables that number the processes of one job: only the one numbered 0 everywhere (the launching process,
# rank 0 of DDP, SLURM's task 0) holds the lock; the ranks it starts write into the same directory with it
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
# the errors a write into a vanished, replaced or read-only directory raises
LOST_DIRECTORY = (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS)


def is_launching_process() -> bool:
    """Whether this process is the one that holds a run's lock (not a DDP rank > 0 nor a SLURM task > 0)."""
    return all(int(os.environ.get(name) or 0) == 0 for name in RANK_VARIABLES)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _restart_count() -> int:
    """How often SLURM has requeued this job (0 outside SLURM)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def _create_from(temporary: Path, path: Path) -> None:
    """Create ``path`` with the content of ``temporary`` in one step; FileExistsError when ``path`` exists (never
    two holders). A hard link, or an exclusive create where the file system has none."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        with open(path, "x") as f:
            f.write(temporary.read_text())


class RunInUse(ApaError):
    """The run directory is held by another run that may still be running."""


@contextmanager
def _exclusive(run_dir: Path) -> Iterator[None]:
    """An flock of ``run_dir`` itself while inside: two processes never judge and replace the same stale lock file
    at once (each would take it over, and both would hold it)."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _holder_text(holder: dict[str, Any]) -> str:
    job = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return f"process {holder.get('pid')} on {holder.get('host')}{job}, since {holder.get('since')}"


class RunLock:
    """The lock of one run directory, held from ``acquire`` to ``release`` (both idempotent)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.held = False
        self._identity: tuple[int, int] | None = None

    def _me(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart_count": _restart_count(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }

    def holder(self) -> dict[str, Any] | None:
        """What the lock file says about the process holding it; None without one, {} when it cannot be read."""
        try:
            holder = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def stale_reason(self, holder: dict[str, Any]) -> str | None:
        """Why the lock of ``holder`` is left over from a process that no longer runs, or None when it may run."""
        job = os.environ.get("SLURM_JOB_ID")
        if job and holder.get("slurm_job_id") == job and (holder.get("slurm_restart_count") or 0) < _restart_count():
            return f"SLURM requeued job {job}"
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            if not _alive(holder["pid"]):
                return f"process {holder['pid']} no longer runs"
        if not holder:
            return "the lock file is empty or damaged"
        return None

    def in_use_message(self, holder: dict[str, Any]) -> str:
        return (
            f"{self.run_dir} is in use by {_holder_text(holder)} (its lock {self.path}): two runs in one directory "
            "would mix their checkpoints and records. Wait for that run to end, or stop it; if it no longer runs "
            "(it was killed on another machine), delete the lock file and run again."
        )

    def refuse_if_in_use(self) -> None:
        """Raise ApaError when a process that may still run holds the lock (checked before Hydra writes the
        resumed run's ``.hydra`` folder; ``acquire`` decides)."""
        holder = self.holder()
        if holder and self.stale_reason(holder) is None:
            raise RunInUse(self.in_use_message(holder))

    def acquire(self) -> None:
        """Take the lock: create ``run.lock`` with this process's details, or take over a stale one (logged).

        Raises ApaError naming the holder when another live process (or one on another host) holds it.
        """
        temporary = self.run_dir / f".{LOCK_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        temporary.write_text(json.dumps(self._me()) + "\n")
        try:
            with _exclusive(self.run_dir):
                for _ in range(3):  # a lock its holder removed meanwhile: try again
                    try:
                        _create_from(temporary, self.path)
                    except FileExistsError:
                        holder = self.holder()
                        if holder is None:
                            continue
                        reason = self.stale_reason(holder)
                        if reason is None:
                            raise RunInUse(self.in_use_message(holder)) from None
                        log.info(
                            "Taking over the lock of %s left by %s: %s.", self.run_dir, _holder_text(holder), reason
                        )
                        self.path.unlink(missing_ok=True)
                        continue
                    self.held = True
                    stat = os.stat(self.run_dir)
                    self._identity = (stat.st_dev, stat.st_ino)
                    return
        finally:
            temporary.unlink(missing_ok=True)
        raise ApaError(f"{self.path} could not be taken: other processes keep replacing it; run again.")

    def release(self) -> None:
        """Remove ``run.lock`` when this process holds it (left alone when another process took it over)."""
        if self.held and (self.holder() or {}).get("pid") == os.getpid():
            try:
                self.path.unlink(missing_ok=True)
            except OSError:  # the directory itself is gone or read-only: nothing to release there
                pass
        self.held = False

    def directory_problem(self) -> str | None:
        """What happened to the run directory since ``acquire``, or None when it is still there and writable."""
        return directory_problem(self.run_dir, self._identity)


def directory_problem(run_dir: Path, identity: tuple[int, int] | None = None) -> str | None:
    """What keeps the run directory from being written, or None: deleted, replaced by a file, another folder
    made under its name (when ``identity``, its device and inode at the start, is given), read-only."""
    try:
        stat = os.stat(run_dir)
    except FileNotFoundError:
        return "it was deleted"
    except OSError as exc:
        return f"it cannot be read any more ({exc.strerror})"
    if not run_dir.is_dir():
        return "it was replaced by a file"
    if identity is not None and (stat.st_dev, stat.st_ino) != identity:
        return "it was deleted or moved, and another folder was made under its name"
    if not os.access(run_dir, os.W_OK):
        return "it is read-only"
    return None


def directory_message(run_dir: Path, problem: str, cause: OSError | None = None) -> str:
    """The ``error:`` paragraph for a run whose directory ``problem`` befell during the run."""
    failed = f" (writing {cause.filename} failed: {cause.strerror})" if cause and cause.filename else ""
    return (
        f"the run directory {run_dir} could not be written any more: {problem}{failed}. The run stopped; the epochs "
        "it had finished are in its checkpoints/ folder if that still exists. Give the folder back (or make it "
        f"writable again) and continue with resume={run_dir}, or start the run again."
    )


def directory_error(run_dir: Path, exc: BaseException, lock: RunLock | None = None) -> ApaError | None:
    """The ApaError for a run that ``exc`` ended because its directory was deleted, replaced or made read-only
    during the run (a write into it failed, even one of a logger's thread), else None."""
    run_dir = Path(run_dir)
    failed = next(
        (
            link
            for link in chain(exc)
            if isinstance(link, OSError)
            and link.errno in LOST_DIRECTORY
            and link.filename is not None
            and run_dir in Path(os.fsdecode(link.filename)).parents
        ),
        None,
    )
    problem = lock.directory_problem() if lock is not None else directory_problem(run_dir)
    if problem is None:  # the directory is as it was: a file in it is missing or read-only, which is no loss of it
        if failed is None or failed.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        problem = "a folder or file in it is read-only"
    if failed is not None and isinstance(failed.filename, bytes):
        failed = OSError(failed.errno, failed.strerror, os.fsdecode(failed.filename))
    return ApaError(directory_message(run_dir, problem, failed))


@contextmanager
def locked(run_dir: Path) -> Iterator[RunLock | None]:
    """Hold ``run_dir``'s lock while inside (the launching process only: None in a DDP rank or SLURM task > 0),
    after removing the temporary files a killed run left there. Released on every way out, signals included."""
    if not is_launching_process():
        yield None
        return
    lock = RunLock(run_dir)
    lock.acquire()
    try:
        remove_stale_temporaries(run_dir)  # a killed process's half-written files: no live writer of this run is left
        yield lock
    finally:
        lock.release()


# write_atomically's temporary files: .<name>.<pid>.<random hex>.tmp
TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp")
TEMPORARY_FOLDERS = (".", "checkpoints", "csv")


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the temporary files a killed process (``kill -9``, a lost node) left half-written in the run directory
    and its checkpoints/ and csv/ folders; those of a process that still runs on this host are kept."""
    removed = []
    for folder in TEMPORARY_FOLDERS:
        for path in (run_dir / folder).glob(".*.tmp"):
            match = TEMPORARY.fullmatch(path.name)
            if match and int(match["pid"]) != os.getpid() and not _alive(int(match["pid"])):
                path.unlink(missing_ok=True)
                removed.append(path.name)
    if removed:
        log.info("Removed %d file(s) left half-written by a killed run: %s", len(removed), ", ".join(sorted(removed)))


def _is_event_writer(thread: Any) -> bool:
    return type(thread).__module__.startswith("tensorboard.")


@contextmanager
def writer_thread_errors_to_log() -> Iterator[None]:
    """While inside, an OSError in TensorBoard's event-writer thread (its folder deleted or made read-only) goes to
    the run's log only: TensorBoard raises it again in the main thread at the next write, where the run ends with
    one ``error:`` paragraph (``directory_error``) instead of the thread's traceback on the console."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, OSError) and _is_event_writer(args.thread):
            log.debug("TensorBoard's writer thread stopped: %s", args.exc_value)
            return
        previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous
