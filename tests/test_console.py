"""What a run prints and logs: each message once, no third-party tips or deprecation notices, no lines caused by
our own defaults, the test metrics once; ``run.log`` in the run directory; one line outside the virtual env."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from apa_lightning.cli import environment
from apa_lightning.cli.console import ConsoleFormatter, quiet_console
from apa_lightning.cli.main import cli

REPO = Path(__file__).resolve().parents[1]


def test_a_training_run_prints_each_line_once_without_noise_and_logs_the_epochs_and_summary(
    monkeypatch, capsys, tmp_path
):
    overrides = [
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",  # not 1 / 1.0: Lightning announces those itself
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "logger=csv",
        f"paths.root_dir={tmp_path}",
    ]
    monkeypatch.setattr(sys, "argv", ["apa_lightning", *overrides])
    monkeypatch.chdir(tmp_path)
    cli()
    captured = capsys.readouterr()
    console = captured.out + captured.err
    (run_dir,) = (tmp_path / "outputs" / "runs").glob("*/*")

    for noise in ("💡", "litlogger", "was configured so", "LeafSpec", "FLOPs", "Test metric ", "DataLoader 0", "INFO:"):
        assert noise not in console, noise
    shown = run_dir.relative_to(tmp_path)  # the summary names it from the working directory
    for line in ("Seed set to 42", "GPU available: False, used: False", f"Run directory: {shown}\n"):
        assert console.count(line) == 1, line
    assert console.count("test/loss") == 1 and console.count("Test metrics (epoch001.ckpt):") == 1
    ((total, trainable),) = re.findall(r"ConvAutoencoder: ([\d,]+) parameters, ([\d,]+) trainable; layers in ", console)
    assert total == trainable and f"Total params: {total}\n" in (run_dir / "model_summary.txt").read_text()

    assert sorted(p.name for p in run_dir.glob("*.log")) == ["run.log"]
    log = (run_dir / "run.log").read_text()
    assert "][lightning.fabric.utilities.seed][INFO] - Seed set to 42" in log  # the file keeps time and logger
    assert "[apa_lightning.callbacks.epoch_metrics][INFO] - epoch 1/1  train/loss " in log
    assert "[apa_lightning.tasks.train][INFO] - Test metrics (epoch001.ckpt):\n  test/loss " in log
    assert log.endswith(f"Run directory: {shown}\n") and "💡" not in log


def test_quiet_console_ignores_only_the_listed_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_console()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
        rank_zero_warn("Checkpoint directory /x is missing.")
        rank_zero_warn(  # Lightning's, for a short epoch; training values are logged once per epoch anyway
            "The number of training batches (3) is smaller than the logging interval Trainer(log_every_n_steps=50).",
            category=PossibleUserWarning,
        )
    assert [str(w.message) for w in caught] == ["something else is deprecated", "Checkpoint directory /x is missing."]


def test_console_format_is_the_message_for_info_and_names_other_levels():
    def record(level: int) -> logging.LogRecord:
        return logging.LogRecord("x", level, __file__, 1, "disk %s", ("full",), None)

    formatter = ConsoleFormatter()
    assert formatter.format(record(logging.INFO)) == "disk full"
    assert formatter.format(record(logging.WARNING)) == "WARNING: disk full"


def test_without_the_dependencies_the_command_says_in_one_line_how_to_use_the_venv(tmp_path):
    # -S: no site-packages, as with a Python outside .venv; the package itself is found in the working directory
    done = subprocess.run(
        [sys.executable, "-S", "-m", "apa_lightning", "model=vae"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: apa_lightning needs hydra, which ")
    if environment.VENV.is_dir():
        assert f"source {environment.VENV}/bin/activate" in done.stderr
        assert f"{environment.VENV}/bin/python -m apa_lightning" in done.stderr


def test_importing_without_a_dependency_raises_module_not_found_with_the_same_advice(monkeypatch):
    monkeypatch.setattr(environment, "REQUIRED", ("hydra", "no_such_module_xyz"))
    monkeypatch.setattr(sys, "argv", ["script.py"])
    with pytest.raises(ModuleNotFoundError, match="apa_lightning needs no_such_module_xyz, which ") as raised:
        environment.check_dependencies()
    assert raised.value.name == "no_such_module_xyz"
    monkeypatch.setattr(sys, "argv", ["-m"])  # while `python -m apa_lightning` imports the package
    with pytest.raises(SystemExit, match="^error: apa_lightning needs no_such_module_xyz"):
        environment.check_dependencies()
