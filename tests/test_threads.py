"""CPU threads: OpenMP's waiting threads spin only briefly before they sleep (a busy machine stays fast), and the
number of torch threads comes from the config or the resumed checkpoint, never from the load: a resumed run on
another thread count would add its sums in another order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from apa_lightning.callbacks.torch_threads import cpu_threads
from apa_lightning.errors import ApaError
from apa_lightning.models.autoencoder import AutoencoderModule
from apa_lightning.tasks.train import compose_config
from tests.test_resume import TINY, only_run_dir, run_cli, sigterm_in_second_epoch

REPO = Path(__file__).resolve().parents[1]
PROBE = (
    "import os, sys, apa_lightning; "
    "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"
)


def probe(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | env
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=environ, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_package_bounds_openmps_spinning_before_torch_loads_unless_the_user_chose():
    # OpenMP reads its wait policy once, when torch loads it: the package sets it first (torch is not loaded yet)
    assert probe() == "None 3000 False"
    assert probe(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE None False"
    assert probe(OMP_WAIT_POLICY="PASSIVE") == "PASSIVE None False"
    assert probe(GOMP_SPINCOUNT="0") == "None 0 False"


def test_the_thread_count_is_the_config_else_the_checkpoints_else_torchs_default(tmp_path, monkeypatch):
    cfg = compose_config(["paths.output_dir=x"])
    assert cfg.cpu_threads is None
    monkeypatch.setattr(torch, "get_num_threads", lambda: 5)  # the default: one per core
    assert cpu_threads(cfg) == 5
    recorded, old = tmp_path / "recorded.ckpt", tmp_path / "old.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "cpu_threads": 3}, recorded)
    torch.save({"state_dict": {}, "hyper_parameters": {}}, old)  # a checkpoint from before the count was recorded
    assert cpu_threads(cfg, str(recorded)) == 3
    assert cpu_threads(cfg, str(old)) == 5
    cfg.cpu_threads = 2  # set on the command line: it wins
    assert cpu_threads(cfg, str(recorded)) == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_thread_count_that_is_not_a_positive_integer_is_refused_by_name(make_cfg, value):
    from apa_lightning.cli.config_checks import check_config

    with pytest.raises(ApaError, match=f"^cpu_threads={value} is not allowed: cpu_threads must be an integer >= 1"):
        check_config(make_cfg(f"cpu_threads={value}"))


def test_font_ae_runs_on_one_thread(make_cfg):
    assert make_cfg("experiment=font_ae").cpu_threads == 1


@pytest.mark.slow
def test_a_resume_on_another_default_thread_count_uses_the_recorded_one_and_matches_an_unbroken_run_exactly(
    monkeypatch, capsys, tmp_path
):
    """The first start sees 1 thread (a busy machine, OMP_NUM_THREADS=1), the resume 2: the resume must still run
    on 1, and end bit for bit where the unbroken run ends (2 threads give other weights after a few steps)."""
    previous = torch.get_num_threads()
    short = [*TINY, "trainer.max_epochs=3"]
    set_threads = []
    real_set = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (set_threads.append(n), real_set(n)))
    try:
        real_set(1)
        assert run_cli(monkeypatch, capsys, tmp_path / "straight", *short)[0] == 0
        straight = only_run_dir(tmp_path / "straight")

        original = AutoencoderModule.training_step
        sigterm_in_second_epoch(monkeypatch)
        assert run_cli(monkeypatch, capsys, tmp_path / "broken", *short)[0] == 128 + signal.SIGTERM
        monkeypatch.setattr(AutoencoderModule, "training_step", original)
        run_dir = only_run_dir(tmp_path / "broken")
        assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["cpu_threads"] == 1

        real_set(2)  # the resume starts where torch's default is 2
        set_threads.clear()
        code, stderr = run_cli(monkeypatch, capsys, tmp_path / "broken", f"resume={run_dir}")
        assert code == 0, stderr
        assert set_threads[0] == 1  # the recorded count, set before training
    finally:
        real_set(previous)

    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    resumed = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((straight / "metrics.json").read_text())
    assert resumed["test"] == expected["test"] and resumed["best_score"] == expected["best_score"]
    assert resumed["cpu_threads"] == expected["cpu_threads"] == 1


WAITS = """
import resource, time, apa_lightning, torch
torch.set_num_threads(2)
x = torch.ones(2_000_000)
x.add_(1)
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
start = cpu()
for _ in range(200):  # a parallel operation, then the main thread waits: OpenMP's other thread waits with it
    x.add_(1)
    time.sleep(0.005)
print(cpu() - start)
"""


@pytest.mark.slow
def test_openmps_waiting_threads_stop_spinning_after_a_few_microseconds():
    """200 waits of 5 ms after a parallel operation: with OpenMP's own 3 ms of spinning the waiting thread burns
    about 1.5 s of CPU (measured), with the package's bound about as much as sleeping at once (0.1 s)."""

    def cpu_seconds(**env: str) -> float:
        environ = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | env
        done = subprocess.run([sys.executable, "-c", WAITS], env=environ, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return float(done.stdout)

    spinning, package = cpu_seconds(GOMP_SPINCOUNT="300000"), cpu_seconds()
    assert spinning > 0.5, spinning  # the measurement sees spinning
    assert package < spinning / 3, (package, spinning)
