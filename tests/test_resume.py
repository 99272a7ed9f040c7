"""Resume and interruption: last.ckpt is the last finished epoch, a resumed run continues the same run directory
and ends exactly where an unbroken run ends, signals exit non-zero and are recorded."""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import signal
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from apa_lightning.callbacks.epoch_seed import EpochSeed
from apa_lightning.cli.main import cli, resumed_arguments
from apa_lightning.models.autoencoder import AutoencoderModule
from apa_lightning.runs.checkpoints import finished_epochs, first_difference
from apa_lightning.tasks.train import train

# A denoising AE draws noise every step and its loader shuffles: both must repeat exactly after a resume.
TINY = [
    "model=dae",
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "logger=tensorboard",
    "seed=7",
]


def run_cli(monkeypatch, capsys, root: Path, *overrides: str) -> tuple[int, str]:
    """``python -m apa_lightning`` in this process; its exit status and stderr."""
    monkeypatch.setattr(sys, "argv", ["apa_lightning", *overrides, f"paths.root_dir={root}"])
    try:
        cli()
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def only_run_dir(root: Path) -> Path:
    (run_dir,) = (root / "outputs" / "runs").glob("*/*")
    return run_dir


def sigterm_in_second_epoch(monkeypatch) -> None:
    """Make the autoencoder send this process SIGTERM at the third batch of its second epoch (a preemption)."""
    original = AutoencoderModule.training_step

    def step(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(AutoencoderModule, "training_step", step)


def epoch_rows(run_dir: Path) -> list[dict[str, float]]:
    """The rows of the run's metrics.csv as numbers."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_last_checkpoint_is_the_last_epoch_when_the_best_is_earlier(make_cfg):
    # the highest validation loss is the first epoch's: best = epoch 0, while last.ckpt must follow every epoch
    cfg = make_cfg(*TINY, "logger=csv", "trainer.max_epochs=3", "optimized_mode=max")
    train(cfg)
    out = Path(cfg.paths.output_dir)
    record = json.loads((out / "metrics.json").read_text())
    assert Path(record["best_checkpoint"]).name == "epoch001.ckpt"
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == 3

    # the test ran on the best checkpoint, not on the final weights
    best = AutoencoderModule.load_from_checkpoint(record["best_checkpoint"], weights_only=True)
    final = AutoencoderModule.load_from_checkpoint(out / "checkpoints" / "last.ckpt", weights_only=True)
    datamodule = __import__("apa_lightning.tasks.train", fromlist=["instantiate_plain"]).instantiate_plain(cfg.data)
    datamodule.setup("test")
    x, _ = datamodule.on_after_batch_transfer(next(iter(datamodule.test_dataloader())), 0)
    best.eval(), final.eval()
    with torch.no_grad():
        best_mse = torch.nn.functional.mse_loss(best(x), x).item()
        final_mse = torch.nn.functional.mse_loss(final(x), x).item()
    assert best_mse != pytest.approx(final_mse, rel=1e-3)
    # limit_test_batches=2: the logged test MSE averages two batches; the first alone is close to it
    assert abs(record["test"]["test/mse"] - best_mse) < abs(record["test"]["test/mse"] - final_mse)


# workers: loader workers (restarted each epoch) augment each image: their random streams must repeat too;
# device: the splits live on the device (no DataLoader) and each batch is augmented there
AUGMENTATION_PATHS = {
    "workers": ["data.num_workers=2", "data/augmentation=standard", "data.augment_on=workers"],
    "device": ["data.num_workers=0", "data.on_device=true", "data/augmentation=standard", "data.augment_on=device"],
}


@pytest.mark.slow
@pytest.mark.parametrize("path", list(AUGMENTATION_PATHS))
def test_interrupted_run_resumes_in_place_and_ends_like_an_unbroken_run(monkeypatch, capsys, tmp_path, path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    workers = AUGMENTATION_PATHS[path]
    assert run_cli(monkeypatch, capsys, straight, *TINY, *workers, "trainer.max_epochs=3")[0] == 0

    original = AutoencoderModule.training_step
    sigterm_in_second_epoch(monkeypatch)
    code, stderr = run_cli(monkeypatch, capsys, broken, *TINY, *workers, "trainer.max_epochs=3")
    assert code == 128 + signal.SIGTERM, stderr
    run_dir = only_run_dir(broken)
    assert f"resume={run_dir}" in stderr and "Traceback" not in stderr
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM"
    assert record["error"] == "interrupted by SIGTERM"
    # the interruption in the middle of epoch 1 leaves last.ckpt at the end of epoch 0
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert "Interrupted by SIGTERM" in (run_dir / "run.log").read_text()

    monkeypatch.setattr(AutoencoderModule, "training_step", original)
    # only the short form and no other override: the run's own config (model=dae, seed=7, ...) comes back
    code, stderr = run_cli(monkeypatch, capsys, broken, f"resume={run_dir}")
    assert code == 0, stderr
    assert only_run_dir(broken) == run_dir  # no second directory
    resumed = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((only_run_dir(straight) / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["epochs"] == expected["epochs"] == 3
    for key, value in expected["test"].items():
        assert resumed["test"][key] == pytest.approx(value, abs=1e-6), key
    assert resumed["best_score"] == pytest.approx(expected["best_score"], abs=1e-6)
    assert Path(resumed["best_checkpoint"]).name == Path(expected["best_checkpoint"]).name
    a, b = weights(only_run_dir(straight) / "checkpoints" / "last.ckpt"), weights(run_dir / "checkpoints" / "last.ckpt")
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)

    # metrics.csv: the epoch before the interruption kept, each epoch once, the numbers of the unbroken run
    resumed_rows, straight_rows = epoch_rows(run_dir), epoch_rows(only_run_dir(straight))
    assert [r["epoch"] for r in resumed_rows] == [r["epoch"] for r in straight_rows] == [1, 2, 3]
    for row, expected_row in zip(resumed_rows, straight_rows, strict=True):
        assert row.keys() == expected_row.keys()
        for key in row.keys() - {"time_s"}:
            assert row[key] == pytest.approx(expected_row[key], abs=1e-6), key

    # one TensorBoard run whose validation curve has one point per epoch, continued, not restarted
    steps = [e.step for e in EventAccumulator(str(run_dir)).Reload().Scalars("val/loss_mse")]
    straight_steps = EventAccumulator(str(only_run_dir(straight))).Reload().Scalars("val/loss_mse")
    assert steps == [e.step for e in straight_steps] and len(steps) == 3

    # a finished run has nothing left to train, and refusing leaves its records as they were
    kept = {name: (run_dir / name).read_bytes() for name in ("metrics.json", ".hydra/overrides.yaml")}
    code, stderr = run_cli(monkeypatch, capsys, broken, f"resume={run_dir}")
    assert code == 1 and "nothing left to train" in stderr and "trainer.max_epochs=3" in stderr
    assert {name: (run_dir / name).read_bytes() for name in kept} == kept


def test_sigint_is_recorded_and_exits_130(monkeypatch, capsys, tmp_path):
    original = AutoencoderModule.training_step

    def ctrl_c(self, batch, batch_idx):
        if self.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(AutoencoderModule, "training_step", ctrl_c)
    root = tmp_path / "my runs"  # the printed resume command must survive a paste into the shell
    code, stderr = run_cli(monkeypatch, capsys, root, *TINY, "trainer.max_epochs=2", "logger=csv")
    assert code == 130, stderr
    run_dir = only_run_dir(root)
    (hint,) = [line for line in stderr.splitlines() if "continue with python -m apa_lightning" in line]
    assert shlex.split(hint.split("continue with ", 1)[1]) == ["python", "-m", "apa_lightning", f"resume={run_dir}"]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert (record["status"], record["signal"]) == ("interrupted", "SIGINT")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored after the run

    # the resume continues its checkpoints folder without Lightning's warning that the folder is not empty
    monkeypatch.setattr(AutoencoderModule, "training_step", original)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, stderr = run_cli(monkeypatch, capsys, root, f"resume={run_dir}")
    assert code == 0, stderr
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]


def test_sigterm_stops_a_sweep_with_a_summary_of_its_trials(monkeypatch, capsys, tmp_path):
    original = AutoencoderModule.training_step

    def sigterm_in_second_trial(self, batch, batch_idx):
        if self.hparams.optimizer["lr"] == 0.002:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(AutoencoderModule, "training_step", sigterm_in_second_trial)
    overrides = ["-m", "model.optimizer.lr=0.001,0.002,0.003", *TINY, "trainer.max_epochs=1", "logger=csv"]
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *overrides)
    assert code == 128 + signal.SIGTERM, stderr
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    assert f"Sweep interrupted by SIGTERM: {sweep / 'summary.md'}" in stderr
    summary = (sweep / "summary.md").read_text()
    assert "3 runs, 2 not completed" in summary
    rows = {line.split("|")[2].strip(): line for line in summary.splitlines() if line.startswith("| ")}
    assert "completed" in rows["0"] and "interrupted by SIGTERM" in rows["1"]
    assert "| not started |" in rows["2"] and "model.optimizer.lr=0.003" in rows["2"]


def test_resume_brings_back_the_run_overrides_that_the_command_does_not_set(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- model=vae\n- seed=3\n- trainer.max_epochs=2\n- resume=/old\n")
    given = ["--cfg", "job", f"resume={run}", "trainer.max_epochs=5"]
    assert resumed_arguments(given) == [
        "--cfg",
        "job",
        f"resume={run}",
        "model=vae",
        "seed=3",
        f"hydra.run.dir={run.resolve()}",
        "hydra.mode=RUN",  # a trial of a preset sweep resumes alone
        "trainer.max_epochs=5",
    ]
    checkpoint = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    assert resumed_arguments([checkpoint])[1:3] == ["model=vae", "seed=3"]
    # an earlier epoch starts a new run from it; prediction only reads the checkpoint
    assert resumed_arguments([f"ckpt_path={run / 'checkpoints' / 'epoch003.ckpt'}"])[1:] == []
    assert resumed_arguments(["task=predict", checkpoint]) == ["task=predict", checkpoint]
    assert resumed_arguments(["-m", f"resume={run}"]) == ["-m", f"resume={run}"]  # sweeps start new runs
    assert resumed_arguments([f"ckpt_path={tmp_path / 'foreign.ckpt'}"]) == [f"ckpt_path={tmp_path / 'foreign.ckpt'}"]


def test_a_run_of_an_earlier_version_with_a_callback_switched_off_that_its_family_lacks_resumes(tmp_path):
    # earlier versions composed every family's callbacks, and docs said to switch one off with callbacks.x=null
    from apa_lightning.cli.overrides import check_overrides
    from apa_lightning.tasks.train import compose_config

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- model=cnn_base\n- callbacks.image_grids=null\n")
    arguments = resumed_arguments([f"resume={run}"])
    assert "++callbacks.image_grids=null" in arguments
    check_overrides(arguments)  # no "callbacks.image_grids is not a setting" refusal
    carried = [a for a in arguments if not a.startswith(("resume=", "hydra."))]
    cfg = compose_config([*carried, f"paths.output_dir={run}"])
    assert cfg.callbacks.image_grids is None and "classification_report" in cfg.callbacks
    # on a family that has the callback it stays switched off
    cfg = compose_config(["model=ae", "++callbacks.image_grids=null", f"paths.output_dir={run}"])
    assert cfg.callbacks.image_grids is None


def test_a_requeued_slurm_job_continues_its_run_and_skips_a_finished_one(monkeypatch, capsys, tmp_path):
    import csv

    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    original = AutoencoderModule.training_step

    def preempted_in_second_epoch(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # what SLURM sends when it preempts or requeues the job
        return original(self, batch, batch_idx)

    monkeypatch.setattr(AutoencoderModule, "training_step", preempted_in_second_epoch)
    command = [*TINY, "logger=csv", "trainer.max_epochs=2"]
    assert run_cli(monkeypatch, capsys, tmp_path, *command)[0] == 128 + signal.SIGTERM
    run_dir = only_run_dir(tmp_path)
    assert run_dir.name.startswith("slurm4242_")

    monkeypatch.setattr(AutoencoderModule, "training_step", original)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # SLURM runs the same job script again
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *command)
    assert code == 0, stderr
    assert only_run_dir(tmp_path) == run_dir
    record = json.loads((run_dir / "metrics.json").read_text())
    assert (record["status"], record["epochs"]) == ("completed", 2)
    assert record["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    # the CSV log holds both epochs: the first process's and the requeued one's
    rows = [r for r in csv.DictReader(open(run_dir / "csv" / "steps.csv")) if r.get("val/loss")]
    assert [int(r["epoch"]) for r in rows] == [0, 1]

    # requeued again after it finished (another command of the job script was preempted): nothing to redo
    finished = (run_dir / "metrics.json").read_bytes()
    assert run_cli(monkeypatch, capsys, tmp_path, *command)[0] == 0
    assert (run_dir / "metrics.json").read_bytes() == finished


def test_a_network_key_the_checkpoint_predates_is_compared_with_the_class_default():
    net = {"_target_": "apa_lightning.nets.conv_ae.ConvAutoencoder", "in_channels": 1}
    saved = {"net": net, "noise": None}  # saved before ConvAutoencoder had output_batchnorm (default True)
    assert first_difference(saved, {"net": {**net, "output_batchnorm": False}}) == ("net.output_batchnorm", True, False)
    assert first_difference(saved, {"net": {**net, "output_batchnorm": True}}) is None


def test_epoch_seed_gives_each_rank_its_own_draws_and_every_test_the_same_ones():
    callback = EpochSeed(seed=7)

    def draws(rank: int, hook: str, epoch: int = 3) -> torch.Tensor:
        trainer = SimpleNamespace(current_epoch=epoch, global_rank=rank)
        getattr(callback, hook)(trainer, None)
        return torch.rand(4)

    rank0 = [draws(0, "on_train_epoch_start", epoch) for epoch in range(6)] + [draws(0, "on_test_epoch_start")]
    for rank in (1, 2):  # not rank 0's draws of any other epoch or of the test
        ranked = draws(rank, "on_train_epoch_start")
        assert not any(torch.equal(ranked, other) for other in rank0)
    assert torch.equal(draws(0, "on_train_epoch_start"), draws(0, "on_train_epoch_start"))
    first_test = draws(0, "on_test_epoch_start")
    torch.rand(10)  # whatever ran in between (a fit, or nothing in task=eval)
    assert torch.equal(draws(0, "on_test_epoch_start"), first_test)
    assert not torch.equal(first_test, draws(0, "on_train_epoch_start"))


SHORT = [*TINY, "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


@pytest.mark.slow
def test_a_copied_run_directory_resumes_twice_where_it_lies_with_one_last_checkpoint(monkeypatch, capsys, tmp_path):
    # optimized_mode=max: the best epoch is not the last, so a top-k checkpoint of the old place would stay behind
    command = [*SHORT, "logger=csv", "optimized_mode=max"]
    assert run_cli(monkeypatch, capsys, tmp_path / "scratch", *command, "trainer.max_epochs=2")[0] == 0
    copy = tmp_path / "home" / "run"
    shutil.copytree(only_run_dir(tmp_path / "scratch"), copy)
    for epochs in (3, 4):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code, stderr = run_cli(monkeypatch, capsys, tmp_path, f"resume={copy}", f"trainer.max_epochs={epochs}")
        assert code == 0, stderr
        assert not [w for w in caught if "dirpath has changed" in str(w.message)]
        record = json.loads((copy / "metrics.json").read_text())
        assert (record["status"], record["epochs"]) == ("completed", epochs)
        assert record["resumed_from"] == str(copy / "checkpoints" / "last.ckpt")
        last = torch.load(copy / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == epochs  # last.ckpt moved on
        (best,) = [p.name for p in (copy / "checkpoints").iterdir() if p.name != "last.ckpt"]  # save_top_k=1
        assert Path(record["best_checkpoint"]) == copy / "checkpoints" / best
    assert [r["epoch"] for r in epoch_rows(copy)] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_run_interrupted_in_its_test_is_tested_on_resume(monkeypatch, capsys, tmp_path):
    original = AutoencoderModule.test_step

    def sigterm_in_test(self, batch, batch_idx):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(AutoencoderModule, "test_step", sigterm_in_test)
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *SHORT, "logger=csv", "trainer.max_epochs=2")
    assert code == 128 + signal.SIGTERM, stderr
    run_dir = only_run_dir(tmp_path)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert (record["status"], record["epochs"], record["test"]) == ("interrupted", 2, {})

    monkeypatch.setattr(AutoencoderModule, "test_step", original)
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, f"resume={run_dir}")
    assert code == 0, stderr
    assert "nothing left to train" not in stderr
    record = json.loads((run_dir / "metrics.json").read_text())
    assert (record["status"], record["epochs"]) == ("completed", 2)
    assert set(record["test"]) >= {"test/loss", "test/psnr"} and record["images_per_s"] is not None
    assert [r["epoch"] for r in epoch_rows(run_dir)] == [1, 2]  # no epoch trained again
    # now it is complete: nothing left to do
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, f"resume={run_dir}")
    assert code == 1 and "nothing left to train" in stderr


def test_sighup_is_recorded_like_sigterm_and_exits_129(monkeypatch, capsys, tmp_path):
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        pytest.skip("the tests run under nohup: a run keeps ignoring SIGHUP then")
    original = AutoencoderModule.training_step

    def hang_up(self, batch, batch_idx):
        if self.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGHUP)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(AutoencoderModule, "training_step", hang_up)
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *SHORT, "logger=csv", "trainer.max_epochs=2")
    assert code == 128 + signal.SIGHUP == 129, stderr
    run_dir = only_run_dir(tmp_path)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert (record["status"], record["signal"], record["epochs"]) == ("interrupted", "SIGHUP", 1)
    assert "Interrupted by SIGHUP" in (run_dir / "run.log").read_text()
    assert f"resume={run_dir}" in stderr and "Traceback" not in stderr
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # restored after the run


@pytest.mark.slow
def test_sigterm_while_a_checkpoint_is_written_leaves_a_record_that_matches_the_files(monkeypatch, capsys, tmp_path):
    from apa_lightning.callbacks.checkpoints import AtomicCheckpointIO

    original = AtomicCheckpointIO.save_checkpoint

    def sigterm_writing_second_last(self, checkpoint, path, storage_options=None):
        if Path(path).name == "last.ckpt" and checkpoint["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", sigterm_writing_second_last)
    command = [*TINY, "logger=csv", "trainer.max_epochs=3"]
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *command)
    assert code == 128 + signal.SIGTERM, stderr
    run_dir = only_run_dir(tmp_path)
    record = json.loads((run_dir / "metrics.json").read_text())
    # the second epoch, the best so far, had its top-k checkpoint written before last.ckpt: the record counts it
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch002.ckpt", "last.ckpt"]
    assert Path(record["best_checkpoint"]).name == "epoch002.ckpt"
    assert record["epochs"] == finished_epochs(torch.load(record["best_checkpoint"], weights_only=True)) == 2

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", original)
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, f"resume={run_dir}")
    assert code == 0, stderr
    assert not [p.name for p in (run_dir / "checkpoints").iterdir() if "-v" in p.name]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 3


def test_a_moved_checkpoint_state_names_the_files_in_the_new_folder(tmp_path):
    from apa_lightning.callbacks.checkpoints import RunCheckpoint

    old, new = "/scratch/run/checkpoints", tmp_path / "home" / "run" / "checkpoints"
    callback = RunCheckpoint(dirpath=new, monitor="val/loss", save_last=True)
    score = torch.tensor(0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "The dirpath has changed"
        callback.load_state_dict(
            {
                "monitor": "val/loss",
                "dirpath": old,
                "best_model_score": score,
                "best_model_path": f"{old}/epoch002.ckpt",
                "current_score": score,
                "best_k_models": {f"{old}/epoch002.ckpt": score},
                "kth_best_model_path": f"{old}/epoch002.ckpt",
                "kth_value": score,
                "last_model_path": f"{old}/last.ckpt",
            }
        )
    assert callback.last_model_path == str(new / "last.ckpt")
    assert callback.best_model_path == callback.kth_best_model_path == str(new / "epoch002.ckpt")
    assert callback.best_k_models == {str(new / "epoch002.ckpt"): score} and callback.best_model_score == score


def test_a_detection_runs_last_weights_resume_it_in_place(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- experiment=kitti_yolo_scratch\n- trainer.max_epochs=3\n")
    last = f"ckpt_path={run / 'weights' / 'last.pt'}"  # YOLO's last.pt, as resume=<run dir> finds it
    assert resumed_arguments(["task=detect", last]) == [
        "task=detect",
        last,
        "experiment=kitti_yolo_scratch",
        "trainer.max_epochs=3",
        f"hydra.run.dir={run.resolve()}",
        "hydra.mode=RUN",
    ]
    best = f"ckpt_path={run / 'weights' / 'best.pt'}"  # other weights start a new run from them
    assert resumed_arguments(["task=detect", best]) == ["task=detect", best]


@pytest.mark.parametrize("flag", ["-m", "--multirun"])
def test_a_sweep_given_a_run_to_resume_starts_new_runs(tmp_path, flag):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- model=vae\n- seed=3\n")
    for argument in (f"resume={run}", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"):
        argv = [flag, argument, "model.optimizer.lr=0.001,0.01"]
        assert resumed_arguments(argv) == argv  # neither the run's overrides nor its directory: each trial its own
