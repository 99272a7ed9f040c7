"""A one-node SLURM cluster on this machine, for the tests of the cluster path (tests/test_slurm.py).

``start()`` returns the node's name once a SLURM cluster answers here with that node idle: the one already up, or
one it starts as root (munged, slurmctld and slurmd) from an ``/etc/slurm/slurm.conf`` written for this host: its
name, CPUs and memory as ``slurmd -C`` reports them, the only node of one partition, ``JobRequeue=1``, no
accounting, no cgroups (processes tracked through ``/proc``). It raises ``Unavailable`` with the reason when there
can be none (SLURM not installed, not root, a configuration of someone else's), ``StartFailed`` with the daemons'
last log lines when they do not start. ``stop()`` ends them.

Also a command, for trying the cluster path by hand (docs/cluster.md):
``python tests/slurm_cluster.py start`` / ``python tests/slurm_cluster.py stop``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = "slurm-wlm munge"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo", "squeue")
CONF = Path("/etc/slurm/slurm.conf")
MARK = "# Written by apa_lightning's tests/slurm_cluster.py"
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET_DIR = Path("/run/munge")
LOG_DIR = Path("/var/log/slurm")
PARTITION = "debug"
STARTED = "started"  # what start() returns in second place when it started the daemons


class Unavailable(Exception):
    """No SLURM cluster can be had on this machine; the message says why."""


class StartFailed(RuntimeError):
    """The daemons of a cluster this machine should run did not start; the message has their logs' last lines."""


def _run(*command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def host() -> str:
    """This machine's short name: the node's and the controller's."""
    return socket.gethostname().split(".")[0]


def slurm_conf(node: str) -> str:
    """The slurm.conf of a one-node cluster whose node is described by ``node`` (a ``slurmd -C`` line)."""
    name = node.split()[0].split("=", 1)[1]
    return f"""{MARK}: a one-node cluster on this host.
ClusterName=apa
SlurmctldHost={name}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again once its job credential has expired (default 120 s)
AuthInfo=cred_expire=10
MpiDefault=none
# no cgroups: processes are tracked through /proc, tasks are bound to their CPUs by sched_setaffinity
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# CPUs are the consumable resource: several 1-CPU jobs share the node
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobRequeue=1
ReturnToService=2
KillWait=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile={LOG_DIR}/slurmctld.log
SlurmdLogFile={LOG_DIR}/slurmd.log
{node} State=UNKNOWN
PartitionName={PARTITION} Nodes={name} Default=YES MaxTime=INFINITE State=UP
"""


def node_state(name: str) -> str | None:
    """The node's state as ``sinfo`` prints it (``idle``, ``mixed``, ``down*`` ...), None when no cluster answers."""
    try:
        done = _run("sinfo", "--noheader", "--nodes", name, "--format", "%T", timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _munge_works() -> bool:
    encoded = _run("munge", "--no-input")
    return (
        encoded.returncode == 0
        and subprocess.run(["unmunge"], input=encoded.stdout, text=True, capture_output=True).returncode == 0
    )


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _running(pid_file: Path) -> bool:
    """Whether the process a daemon's pid file names is alive."""
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def _start_munge() -> None:
    if not MUNGE_KEY.is_file():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        MUNGE_KEY.write_bytes(os.urandom(128))
        MUNGE_KEY.chmod(0o600)
        shutil.chown(MUNGE_KEY, "munge", "munge")
    MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
    done = _run("runuser", "-u", "munge", "--", "munged")
    if done.returncode != 0 or not _munge_works():
        raise StartFailed(
            f"munged does not start: {done.stderr.strip()} {_log_tail(Path('/var/log/munge/munged.log'))}"
        )


def _wait_idle(name: str, timeout: float) -> str | None:
    """Wait until the node is idle (resuming it once when SLURM had marked it down); its last state."""
    deadline, resumed, state = time.monotonic() + timeout, False, None
    while time.monotonic() < deadline:
        state = node_state(name)
        if state in ("idle", "mixed", "allocated"):
            return state
        if state and state.rstrip("*~#") in ("down", "drained", "draining") and not resumed:
            _run("scontrol", "update", f"nodename={name}", "state=resume")
            resumed = True
        time.sleep(0.5)
    return state


def start(timeout: float = 60) -> tuple[str, str | None]:
    """The name of this machine's SLURM node once it is idle, and ``STARTED`` when this call started the daemons
    (None when the cluster was already up). Raises ``Unavailable`` saying why there is none, ``StartFailed`` when
    the daemons did not start."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise Unavailable(f"SLURM is not installed here ({', '.join(missing)} missing): apt-get install {PACKAGES}")
    name = host()
    if node_state(name) in ("idle", "mixed", "allocated"):
        return name, None
    if os.geteuid() != 0:
        raise Unavailable(f"no SLURM cluster answers on {name}, and only root can start one")
    if CONF.is_file() and not CONF.read_text().startswith(MARK):
        raise Unavailable(f"{CONF} is another cluster's configuration and its node {name} is not up: left alone")
    node = _run("slurmd", "-C").stdout.splitlines()[0]  # NodeName=<host> CPUs=... RealMemory=...
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(slurm_conf(node))
    for folder in (LOG_DIR, Path("/var/spool/slurmctld"), Path("/var/spool/slurmd")):
        folder.mkdir(parents=True, exist_ok=True)
    if not _munge_works():
        _start_munge()
    for daemon in ("slurmctld", "slurmd"):
        if _running(Path(f"/run/{daemon}.pid")):
            continue
        done = _run(daemon)
        if done.returncode != 0:
            raise StartFailed(f"{daemon} does not start: {done.stderr.strip()}\n{_log_tail(LOG_DIR / f'{daemon}.log')}")
    state = _wait_idle(name, timeout)
    if state not in ("idle", "mixed", "allocated"):
        logs = "\n".join(_log_tail(LOG_DIR / f"{d}.log") for d in ("slurmctld", "slurmd"))
        raise StartFailed(f"the SLURM node {name} is {state or 'not answering'} after {timeout:.0f} s:\n{logs}")
    return name, STARTED


def stop(timeout: float = 30) -> None:
    """End the jobs left (a sweep returns once its trials' results are written, before their job steps end), then
    slurmctld and slurmd (``scontrol shutdown``) and munged; return once the controller no longer answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _run("squeue", "--noheader").stdout.strip():
        time.sleep(0.5)
    _run("scancel", "--full", f"--partition={PARTITION}")  # after the timeout
    _run("scontrol", "shutdown")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _run("scontrol", "ping").stdout.count("UP"):
        time.sleep(0.5)
    _run("munged", "--stop")


if __name__ == "__main__":
    if sys.argv[1:] == ["start"]:
        try:
            print(f"SLURM node {start()[0]} is idle; partition {PARTITION}")
        except (Unavailable, StartFailed) as exc:
            sys.exit(f"error: {exc}")
    elif sys.argv[1:] == ["stop"]:
        stop()
    else:
        sys.exit("usage: python tests/slurm_cluster.py start|stop")
