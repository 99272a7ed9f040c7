"""A run directory belongs to one run at a time (run.lock), and a run whose directory is deleted, replaced or made
read-only while it trains ends with one ``error:`` naming it; exception chains that loop are walked once."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from apa_lightning.errors import ApaError, Interrupted, interruption, user_error
from apa_lightning.models.autoencoder import AutoencoderModule
from tests.test_resume import TINY, only_run_dir, run_cli

SHORT = [*TINY, "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_exception_chain_walks_stop_at_an_exception_already_seen():
    first, second = OSError(2, "gone", "/run/events"), RuntimeError("flush failed")
    first.__context__, second.__context__ = second, first  # TensorBoard raises its stored error again and again
    looped = ApaError("fixable")
    looped.__cause__ = first
    first.__cause__ = looped
    answers = []
    walker = threading.Thread(target=lambda: answers.extend([interruption(first), user_error(looped)]), daemon=True)
    walker.start()
    walker.join(timeout=10)
    assert not walker.is_alive(), "a walk over a cyclic exception chain never ends"
    assert answers == [None, "fixable"]
    signalled = RuntimeError("sys.exit(1) of Lightning")
    signalled.__context__ = Interrupted(15)
    signalled.__context__.__context__ = signalled
    assert interruption(signalled) == "SIGTERM"


def _lose_directory(how: str, run_dir: Path) -> None:
    """Take the run directory away from the run: delete it, or make it read-only. Tests run as root, whom a chmod
    does not stop: there the directory is made immutable (chattr +i), which refuses root's writes too."""
    if how == "deleted":
        shutil.rmtree(run_dir)
    elif os.geteuid() != 0:
        run_dir.chmod(0o555)
    else:
        subprocess.run(["chattr", "+i", str(run_dir)], check=True, capture_output=True)


def _give_back(run_dir: Path) -> None:
    if run_dir.is_dir():
        subprocess.run(["chattr", "-i", str(run_dir)], capture_output=True)
        run_dir.chmod(0o755)


@pytest.mark.parametrize("how", ["deleted", "read-only"])
def test_a_run_whose_directory_is_taken_away_ends_with_one_error_naming_it(monkeypatch, capsys, tmp_path, how):
    if how == "read-only" and os.geteuid() == 0 and not shutil.which("chattr"):
        pytest.skip("root ignores a chmod, and chattr is not installed to make the folder immutable")
    original = AutoencoderModule.training_step
    lost = []

    def lose_it_in_second_epoch(self, batch, batch_idx):
        if self.current_epoch == 1 and not lost:
            lost.append(Path(self.trainer.default_root_dir))
            _lose_directory(how, lost[0])
        return original(self, batch, batch_idx)

    monkeypatch.setattr(AutoencoderModule, "training_step", lose_it_in_second_epoch)
    try:
        code, stderr = run_cli(monkeypatch, capsys, tmp_path, *SHORT, "trainer.max_epochs=3")
    finally:
        if lost:
            _give_back(lost[0])
    assert code == 1, stderr
    assert "Traceback" not in stderr and "Exception in thread" not in stderr
    assert stderr.lower().count("error:") == 1, stderr
    (message,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert f"the run directory {lost[0]} could not be written any more" in message
    assert ("it was deleted" if how == "deleted" else "read-only") in message
    assert f"resume={lost[0]}" in message
    assert not (how == "deleted" and lost[0].exists())  # not made again, empty, by a later write


@pytest.mark.slow
def test_a_run_directory_in_use_is_refused_naming_its_holder_and_a_stale_lock_is_taken_over(
    monkeypatch, capsys, tmp_path
):
    assert run_cli(monkeypatch, capsys, tmp_path, *SHORT, "logger=csv", "trainer.max_epochs=1")[0] == 0
    run_dir = only_run_dir(tmp_path)
    lock = run_dir / "run.lock"
    assert not lock.exists()  # released when the run ended

    # a live process holds it (this test's parent stands for a resume started in another terminal)
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "slurm_job_id": None, "since": "2026-01-02 03:04:05"}
    lock.write_text(json.dumps(holder))
    kept = (run_dir / "metrics.json").read_bytes()
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, f"resume={run_dir}", "trainer.max_epochs=2")
    assert code == 1 and "Traceback" not in stderr
    (message,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert f"{run_dir} is in use by process {os.getppid()} on {socket.gethostname()}" in message
    assert "since 2026-01-02 03:04:05" in message and str(lock) in message and "delete the lock file" in message
    assert json.loads(lock.read_text()) == holder and (run_dir / "metrics.json").read_bytes() == kept

    # one on another host, in the same SLURM job: SLURM requeued that job, whose process is gone
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    lock.write_text(json.dumps({**holder, "host": "node-elsewhere", "slurm_job_id": "777"}))
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, f"resume={run_dir}", "trainer.max_epochs=2")
    assert code == 0, stderr
    assert "SLURM requeued job 777" in (run_dir / "run.log").read_text()
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.delenv("SLURM_RESTART_COUNT")

    # a process of this host that no longer runs: taken over, with a line saying so
    lock.write_text(json.dumps({**holder, "pid": dead_pid()}))
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, f"resume={run_dir}", "trainer.max_epochs=3")
    assert code == 0, stderr
    taken = [line for line in (run_dir / "run.log").read_text().splitlines() if "Taking over the lock" in line][-1]
    assert f"{run_dir}" in taken and "no longer runs" in taken
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 3
    assert not lock.exists()


def test_the_lock_is_held_while_the_run_trains_and_released_on_an_error(monkeypatch, capsys, tmp_path):
    original = AutoencoderModule.training_step
    seen = []

    def look_and_fail(self, batch, batch_idx):
        lock = Path(self.trainer.default_root_dir) / "run.lock"
        seen.append(json.loads(lock.read_text()))
        raise ApaError("stopped by the test")

    monkeypatch.setattr(AutoencoderModule, "training_step", look_and_fail)
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *SHORT, "logger=csv", "trainer.max_epochs=1")
    monkeypatch.setattr(AutoencoderModule, "training_step", original)
    assert code == 1 and "stopped by the test" in stderr
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert not (only_run_dir(tmp_path) / "run.lock").exists()


def test_only_the_launching_process_holds_the_lock(monkeypatch, tmp_path):
    from apa_lightning.runs.lock import RunLock, is_launching_process

    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert is_launching_process()
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert is_launching_process()
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP rank Lightning started: it writes under rank 0's lock
    assert not is_launching_process()

    lock = RunLock(tmp_path)
    lock.acquire()
    lock.release()
    assert not (tmp_path / "run.lock").exists()
    # a lock another process took over in the meantime is not removed by the one that lost it
    lock.acquire()
    (tmp_path / "run.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    lock.release()
    assert (tmp_path / "run.lock").exists()


@pytest.mark.slow
def test_a_killed_runs_half_written_files_are_removed_at_its_next_start(monkeypatch, capsys, tmp_path):
    assert run_cli(monkeypatch, capsys, tmp_path, *SHORT, "logger=csv", "trainer.max_epochs=1")[0] == 0
    run_dir = only_run_dir(tmp_path)
    killed = run_dir / "checkpoints" / f".last.ckpt.{dead_pid()}.0123abcd.tmp"  # what kill -9 leaves
    killed_record = run_dir / f".metrics.json.{dead_pid()}.4567abcd.tmp"
    writing = run_dir / "checkpoints" / f".epoch001.ckpt.{os.getppid()}.89abcdef.tmp"  # a live writer's
    for path in (killed, killed_record, writing):
        path.write_bytes(b"half")
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, f"resume={run_dir}", "trainer.max_epochs=2")
    assert code == 0, stderr
    assert not killed.exists() and not killed_record.exists()
    assert writing.exists()
    assert "Removed 2 file(s) left half-written by a killed run" in (run_dir / "run.log").read_text()


def test_two_processes_never_both_take_over_one_stale_lock(monkeypatch, tmp_path):
    """Both judge the dead holder's lock stale; without the flock of the run directory around judging and
    replacing, the second deleted the first one's new lock and both held it."""
    from apa_lightning.runs.lock import RunInUse, RunLock

    lock = tmp_path / "run.lock"
    lock.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "since": "earlier"}))
    original = RunLock.stale_reason

    def slow_judge(self, holder):
        reason = original(self, holder)
        threading.Event().wait(0.3)  # the other process reads the same stale lock meanwhile
        return reason

    monkeypatch.setattr(RunLock, "stale_reason", slow_judge)
    locks, refused = [RunLock(tmp_path), RunLock(tmp_path)], []

    def take(run_lock):
        try:
            run_lock.acquire()
        except RunInUse:
            refused.append(run_lock)

    threads = [threading.Thread(target=take, args=(run_lock,)) for run_lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [run_lock.held for run_lock in locks].count(True) == 1 and len(refused) == 1


def test_a_full_disk_in_tensorboards_writer_thread_is_one_error_paragraph():
    """TensorBoard's writer thread hits ENOSPC; the main thread sees it again at its next write, without a file
    name in our wording: it must still read as a full disk, not fall through to a traceback."""
    import errno

    thread_error = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise thread_error
        except OSError as exc:
            raise RuntimeError("the event writer stopped") from exc
    except RuntimeError as exc:
        message = user_error(exc)
    assert message is not None and message.startswith("the disk is full: a write failed (No space left on device)")
    assert "resume the run" in message


def test_an_interruption_after_the_record_is_saved_keeps_it_completed_and_its_time_counted_once(
    monkeypatch, capsys, tmp_path
):
    """A SIGTERM while the HParams entry is written, after metrics.json was saved: the record used to be saved a
    second time, as interrupted, adding the resume's time twice (it read back its own first save)."""
    import apa_lightning.runs.record as run_record
    import apa_lightning.tasks.train as run_module

    assert run_cli(monkeypatch, capsys, tmp_path, *TINY, "trainer.max_epochs=1")[0] == 0
    run_dir = only_run_dir(tmp_path)
    first = json.loads((run_dir / "metrics.json").read_text())["wall_time_s"]
    saved = []
    original_write = run_record.write_metrics

    def save_and_note(path, record):
        original_write(path, record)
        saved.append(dict(record))

    def interrupted(*args, **kwargs):
        raise Interrupted(15)

    monkeypatch.setattr(run_record, "write_metrics", save_and_note)
    monkeypatch.setattr(run_module, "log_final_hparams", interrupted)
    code, _ = run_cli(monkeypatch, capsys, tmp_path, f"resume={run_dir}", "trainer.max_epochs=2")
    assert code == 143
    record = json.loads((run_dir / "metrics.json").read_text())
    assert [r["status"] for r in saved] == ["completed"] and record["status"] == "completed"
    assert record["wall_time_s"] == saved[0]["wall_time_s"] and record["wall_time_s"] > first
