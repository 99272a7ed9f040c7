"""The command line, through real subprocesses (each pays Python + Lightning start-up, so they are few)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from apa_lightning.cli.main import _run_id


def run_cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLCONFIGDIR": str(cwd / "mpl"), "HYDRA_FULL_ERROR": ""}
    return subprocess.run(
        [sys.executable, "-m", "apa_lightning", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_and_cfg_answer_without_importing_torch(tmp_path):
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['apa_lightning', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('apa_lightning', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'torchvision', 'ultralytics') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    for args in (["--help"], ["--cfg", "job", "model=vae", "data=mnist"]):
        done = subprocess.run([sys.executable, "-c", probe, *args], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "HEAVY []" in done.stdout
    help_text = subprocess.run(
        [sys.executable, "-c", probe, "--help"], cwd=tmp_path, capture_output=True, text=True
    ).stdout
    models = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "model").glob("*.yaml"))
    assert f"model: {', '.join(models)}" in help_text
    launchers = sorted(
        p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "hydra" / "launcher").glob("*.yaml")
    )
    (line,) = [line for line in help_text.splitlines() if line.startswith("Sweep launchers (hydra/launcher=)")]
    assert [name for name in launchers if f" {name} (" in line] == launchers


def test_run_ids_are_unique_within_the_same_second():
    assert len({_run_id() for _ in range(200)}) == 200


@pytest.mark.slow
def test_cli_run_writes_config_checkpoint_tensorboard_and_metrics(tmp_path):
    done = run_cli(
        "model=dae",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "seed=0",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "runs" / "dae_digits").iterdir()  # <model>_<data> without an experiment
    assert f"Run directory: {run_dir.relative_to(tmp_path)}" in done.stdout and "test/noise0.2/psnr" in done.stdout
    assert "- model=dae" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "AutoencoderModule" in (run_dir / ".hydra" / "config.yaml").read_text()
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["run_dir"] == str(run_dir)
    best = Path(record["best_checkpoint"])
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {best.name, "last.ckpt"}
    assert (run_dir / "images" / "reconstructions.png").is_file()

    events = EventAccumulator(str(run_dir)).Reload()  # the event files lie in the run directory itself
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_mse", "val/loss_mse", "val/psnr", "test/mse", "test/noise0.1/input_psnr"} <= scalars
    assert {"val/reconstructions", "test/reconstructions"} <= set(events.Tags()["images"])
    assert len(events.Scalars("val/loss_mse")) == 2


@pytest.mark.slow
def test_cli_missing_data_prints_one_clear_paragraph(tmp_path):
    done = run_cli("data=mnist", "data.download=false", "trainer.max_epochs=1", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    error = done.stderr.split("error: ", 1)[1]
    assert f"{tmp_path / 'data'} (expected MNIST/raw/" in error and "data.source_dir" in error
