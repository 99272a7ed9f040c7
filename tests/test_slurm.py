"""The cluster path on a real (one-node) SLURM cluster: a sweep as a job array, a requeued batch job that
continues its run, and DDP over the tasks of an srun job step (tests/slurm_cluster.py starts the cluster)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from apa_lightning.cli.main import _run_id
from apa_lightning.tasks.distributed import srun_rank_overrides

from . import slurm_cluster
from .test_cli import run_cli
from .test_eval_predict import run_cli as run_in_process

# the launcher's defaults (1 GPU, 8 CPUs, 32 GB) fit no node of a small machine
SMALL_JOB = [
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=15",
]
TINY = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
NOISE = ("Bypassing sacct error", "The `srun` command is available on your system but is not used")


@pytest.fixture(scope="module")
def slurm_node() -> str:
    """This machine's SLURM node, idle: the cluster already up, or one started here (and stopped afterwards)."""
    try:
        name, started = slurm_cluster.start()
    except slurm_cluster.Unavailable as exc:
        pytest.skip(str(exc))
    yield name
    if started:
        slurm_cluster.stop()


def wait_for(condition, timeout: float, what: str, every: float = 0.2):
    """Poll ``condition`` until it returns something true; that value. Fails naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def in_queue(job_id: str) -> bool:
    return bool(subprocess.run(["squeue", "--noheader", "--jobs", job_id], capture_output=True, text=True).stdout)


def test_every_rank_of_an_srun_step_finds_one_run_directory_and_rank_n_logs_apart(monkeypatch):
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    command = ["apa_lightning", "trainer=ddp", "trainer.devices=2"]
    ids = []
    for rank in (0, 1):
        monkeypatch.setenv("SLURM_PROCID", str(rank))
        monkeypatch.setattr(sys, "argv", [*command, *srun_rank_overrides()])  # what cli() gives Hydra
        ids.append(_run_id())
    assert ids[0] == ids[1] and ids[0].startswith("slurm77_")
    assert sys.argv[-2:] == ["hydra.job.name=run_rank1", "hydra.output_subdir=null"]
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task step (sbatch, a submitit trial) is rank 0 alone
    assert srun_rank_overrides() == []


@pytest.mark.slow
def test_a_sweep_runs_as_a_slurm_job_array_and_writes_its_summary(slurm_node, tmp_path):
    done = run_cli(
        "-m", "hydra/launcher=slurm", *SMALL_JOB, "model.optimizer.lr=0.005,0.001", "trainer.max_epochs=1", *TINY,
        cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Sweep summary (2 runs, 0 failed)" in done.stdout
    assert not any(noise in done.stdout + done.stderr for noise in NOISE), done.stdout + done.stderr
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert sorted((r["job"], r["status"]) for r in rows) == [("0", "completed"), ("1", "completed")]
    assert [r["best"] for r in rows] == ["*", ""] and float(rows[0]["best val/loss"]) <= float(rows[1]["best val/loss"])
    # one array of two tasks, each trial in its own directory of the sweep
    (script,) = sweep.glob(".submitit/*/*_submission.sh")
    assert "#SBATCH --array=0-1" in script.read_text()
    for job in ("0_lr=0.005", "1_lr=0.001"):
        assert json.loads((sweep / job / "metrics.json").read_text())["status"] == "completed"


def saved_epoch(checkpoints) -> int | None:
    """The epoch (from 0) of the one checkpoint in ``checkpoints``, None while there is none."""
    found = list(checkpoints)
    return torch.load(found[0], map_location="cpu", weights_only=True)["epoch"] if found else None


def sbatch(script: Path, cwd: Path) -> str:
    done = subprocess.run(["sbatch", "--parsable", str(script)], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip().split(";")[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "requeue",
    [
        ["scontrol", "requeue"],  # what a preemption does: SIGTERM, back to the queue
        ["scancel", "--signal=USR1", "--batch"],  # what #SBATCH --signal=B:USR1@120 sends before the time limit
    ],
    ids=["scontrol_requeue", "sigusr1"],
)
def test_a_requeued_batch_job_continues_its_run_directory_from_last_ckpt(slurm_node, tmp_path, requeue):
    script = tmp_path / "train.sh"
    command = [sys.executable, "-m", "apa_lightning", f"paths.root_dir={tmp_path}", "logger=csv"]
    command += ["trainer.max_epochs=6", "trainer.limit_train_batches=5", "trainer.limit_val_batches=1"]
    script.write_text(
        "#!/bin/bash\n#SBATCH --cpus-per-task=1 --mem=1G --output=job.out --open-mode=append\n"
        f"exec {' '.join(command)}\n"
    )
    job = sbatch(script, tmp_path)
    last = f"outputs/runs/ae_digits/slurm{job}_*/checkpoints/last.ckpt"
    # once last.ckpt holds the second epoch (the console's "epoch 2/6" comes just before it is written); four epochs
    # to go: the requeue lands long before the run could end
    wait_for(lambda: saved_epoch(tmp_path.glob(last)) == 1, 300, "the second epoch's last.ckpt")
    subprocess.run([*requeue, job], check=True)
    wait_for(lambda: not in_queue(job), 600, f"job {job} to end", every=1)

    text = (tmp_path / "job.out").read_text()
    (run_dir,) = (tmp_path / "outputs" / "runs" / "ae_digits").iterdir()
    assert run_dir.name.startswith(f"slurm{job}_")
    last = run_dir / "checkpoints" / "last.ckpt"
    assert "Interrupted by SIGTERM" in text and f"SLURM requeued this job: continuing {run_dir} from {last}." in text
    assert not any(noise in text for noise in NOISE), text
    assert (f"SIGUSR1: requeued SLURM job {job}" in text) == ("--signal=USR1" in requeue)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert (record["status"], record["epochs"], record["resumed_from"]) == ("completed", 6, str(last))
    # every epoch once: the first start's two and the requeued job's four
    with open(run_dir / "metrics.csv", newline="") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]
    with open(run_dir / "csv" / "steps.csv", newline="") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f) if row["val/loss"]] == [0, 1, 2, 3, 4, 5]


@pytest.mark.slow
def test_ddp_over_the_two_tasks_of_an_srun_step_trains_one_run_on_the_cpu(slurm_node, tmp_path):
    command = [sys.executable, "-m", "apa_lightning", f"paths.root_dir={tmp_path}", "model=cnn_base", "trainer=ddp"]
    command += ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=2"]
    command += ["trainer.limit_train_batches=4", "trainer.limit_val_batches=2"]  # all 360 test images: 180 a rank
    srun = ["srun", "--ntasks-per-node=2", "--cpus-per-task=1", "--mem=2G", f"--chdir={tmp_path}"]
    done = subprocess.run([*srun, *command], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stdout + done.stderr
    assert not any(noise in done.stdout + done.stderr for noise in NOISE)
    (run_dir,) = (tmp_path / "outputs" / "runs" / "cnn_base_digits").iterdir()
    assert run_dir.name.startswith("slurm")
    assert sorted(p.name for p in run_dir.glob("run*.log")) == ["run.log", "run_rank1.log"]
    assert "[rank: 1]" not in (run_dir / "run.log").read_text()
    assert "GLOBAL_RANK: 1" in (run_dir / "run_rank1.log").read_text()
    record = json.loads((run_dir / "metrics.json").read_text())
    assert (record["status"], record["epochs"]) == ("completed", 2)

    # the best checkpoint tested again in this process, on one device: the same numbers as the two ranks'
    evaluated = run_in_process(
        tmp_path / "eval", "task=eval", f"ckpt_path={run_dir}", "trainer=cpu", "trainer.devices=1"
    )
    again = json.loads((evaluated / "metrics.json").read_text())
    assert again["checkpoint"] == record["best_checkpoint"]
    assert set(again["test"]) == set(record["test"]) >= {"test/acc", "test/loss", "test/macro_f1"}
    for name, value in record["test"].items():
        assert again["test"][name] == pytest.approx(value, abs=1e-5), name
