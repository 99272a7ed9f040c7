"""Sweeps: summaries, failing trials, presets, launchers, DDP."""

import csv
import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import get_class
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from apa_lightning.runs.names import short_value
from apa_lightning.tasks import sweep_summary as report
from apa_lightning.tasks.distributed import trial_devices

from .test_cli import run_cli

TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def fake_run(sweep: Path, job: str, overrides: list[str], metrics: dict | None) -> None:
    (sweep / job / ".hydra").mkdir(parents=True)
    (sweep / job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (sweep / job / "metrics.json").write_text(json.dumps(metrics))


def completed(score: float, acc: float) -> dict:
    return {
        "status": "completed",
        "optimized_metric": "val/acc",
        "optimized_mode": "max",
        "best_score": score,
        "test": {"test/acc": acc},
        "epochs": 3,
        "wall_time_s": 1.5,
        "images_per_s": 2437.5289,
    }


def test_summary_sorts_by_the_sweep_metric_and_marks_the_best(tmp_path):
    fake_run(tmp_path, "0", ["lr=0.1"], completed(0.70, 0.69))
    fake_run(tmp_path, "1", ["lr=0.01"], {"status": "failed", "error": "ValueError: bad", "best_score": None})
    fake_run(tmp_path, "2", ["lr=0.001"], completed(0.85, 0.84))
    fake_run(tmp_path, "3", ["lr=0.0001"], None)  # killed before it wrote anything
    fake_run(tmp_path, "10", ["lr=1e-5"], completed(0.80, 0.79))
    table = report.write_summary(tmp_path)
    assert [row["job"] for row in table] == ["2", "10", "0", "1", "3"]
    assert [row["best"] for row in table] == ["*", "", "", "", ""]
    assert [row["status"] for row in table][3:] == ["failed", "unfinished"]
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert rows[0]["overrides"] == "lr=0.001" and float(rows[0]["test/acc"]) == 0.84
    assert rows[3]["error"] == "ValueError: bad"
    markdown = (tmp_path / "summary.md").read_text()
    assert "5 runs, 2 not completed; sorted by best val/acc" in markdown
    assert "| * | 2 | lr=0.001 | completed | 0.8500 | 0.8400 | 3 | 1.5 | 2438 |  |" in markdown
    # an Optuna trial's long floats: 4 significant digits in summary.md, as in the job's folder name; exact in the csv
    fake_run(tmp_path, "11", ["lr=0.00031489116479568613", "optimizer=adam"], completed(0.9, 0.9))
    report.write_summary(tmp_path)
    assert "| * | 11 | lr=0.0003149 optimizer=adam | completed |" in (tmp_path / "summary.md").read_text()
    assert (
        list(csv.DictReader(open(tmp_path / "summary.csv")))[0]["overrides"]
        == "lr=0.00031489116479568613 optimizer=adam"
    )
    long_values = ("1234567890", "1_000_000", "2.5e-05", "abcdefghij", "0.00031489116")
    assert [short_value(v) for v in long_values] == [*long_values[:4], "0.0003149"]  # integers stay whole


def test_report_command_rebuilds_the_summary_and_refuses_an_empty_folder(tmp_path, capsys):
    fake_run(tmp_path, "0", ["lr=0.1"], completed(0.7, 0.7))
    report.main([str(tmp_path)])
    assert (tmp_path / "summary.md").is_file() and "lr=0.1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "nothing")])


@pytest.mark.parametrize("folder", ["empty", "run"])
def test_report_refuses_a_folder_without_runs_and_writes_nothing(tmp_path, capsys, folder):
    target = tmp_path / folder
    target.mkdir()
    if folder == "run":  # a single run's directory, not a sweep's
        (target / ".hydra").mkdir()
        (target / ".hydra" / "overrides.yaml").write_text("- lr=0.1\n")
        (target / "metrics.json").write_text(json.dumps(completed(0.7, 0.7)))
    before = sorted(p.name for p in target.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(target)])
    assert exit_info.value.code == 1
    assert f"error: {target} holds no runs of a sweep" in capsys.readouterr().err
    assert sorted(p.name for p in target.rglob("*")) == before


def test_report_names_a_truncated_metrics_file_and_writes_nothing(tmp_path, capsys):
    fake_run(tmp_path, "0", ["lr=0.1"], completed(0.7, 0.7))
    fake_run(tmp_path, "1", ["lr=0.2"], None)
    (tmp_path / "1" / "metrics.json").write_text('{"status": "compl')
    with pytest.raises(SystemExit):
        report.main([str(tmp_path)])
    assert f"error: {tmp_path / '1' / 'metrics.json'} is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "summary.md").exists() and not (tmp_path / "summary.csv").exists()


def test_a_sweep_whose_trials_all_failed_says_so_and_exits_non_zero(tmp_path, capsys):
    from omegaconf import OmegaConf

    fake_run(tmp_path, "0", ["lr=-1"], {"status": "failed", "error": "ValueError: bad", "best_score": None})
    fake_run(tmp_path, "1", ["lr=-2"], {"status": "failed", "error": "ValueError: bad", "best_score": None})
    with pytest.raises(SystemExit) as exit_info:
        report.SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "Sweep summary (2 runs, 2 failed)" in captured.out and "error: all 2 trials failed" in captured.err
    fake_run(tmp_path, "2", ["lr=0.1"], completed(0.7, 0.7))
    with pytest.raises(SystemExit) as exit_info:  # a grid with a failed job: non-zero too, after its summary
        report.SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "Sweep summary (3 runs, 2 failed)" in captured.out and "error: 2 of 3 trials failed" in captured.err
    optuna = {"dir": str(tmp_path)}, {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"}
    config = OmegaConf.create({"hydra": {"sweep": optuna[0], "sweeper": optuna[1]}})
    report.SweepSummary().on_multirun_end(config)  # a study with a best trial: status 0
    assert "Sweep summary (3 runs, 2 failed)" in capsys.readouterr().out
    for job in "0", "1":  # task=eda / predict trials keep no metrics.json: unfinished, not failed
        (tmp_path / job / "metrics.json").unlink()
    report.SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert "Sweep summary (3 runs, 0 failed)" in capsys.readouterr().out


def test_single_gpu_trials_are_dealt_round_robin():
    assert [trial_devices(job, 4) for job in range(6)] == [[0], [1], [2], [3], [0], [1]]


def compose_with_hydra(*overrides: str):
    with initialize_config_module("apa_lightning.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_cnn_v3_report_preset_sweeps_the_reports_four_settings():
    cfg = compose_with_hydra("hparams_search=cnn_v3_report", "setting=row2")
    assert cfg.hydra.sweeper.params.setting == "row1,row2,row3,row4"
    assert (cfg.model.optimizer.lr, cfg.model.net.dropout, cfg.model.optimizer.weight_decay) == (0.0005, 0.4, 0.0005)
    assert cfg.task_name == "cifar10_cnn_v3"


def test_resnet18_grid_and_optuna_presets_compose_and_their_plugins_load():
    grid = compose_with_hydra("hparams_search=resnet18_grid")
    assert dict(grid.hydra.sweeper.params) == {
        "model/optimizer": "sgd,asgd",
        "model.optimizer.lr": "0.01,0.001",
        "data.batch_size": "32,64,128",
    }
    optuna = compose_with_hydra("hparams_search=optuna", "experiment=cifar10_cnn_v3")
    assert optuna.hydra.sweeper.direction == "maximize"  # cifar10_cnn_v3 maximises val/acc
    assert get_class(optuna.hydra.sweeper._target_).__name__ == "OptunaSweeper"


@pytest.mark.parametrize("launcher, plugin", [("local_parallel", "JoblibLauncher"), ("slurm", "SlurmLauncher")])
def test_launcher_presets_compose_and_their_plugins_load(launcher, plugin):
    extra = ["hydra.launcher.partition=gpu"] if launcher == "slurm" else []
    cfg = compose_with_hydra(f"hydra/launcher={launcher}", *extra)
    assert get_class(cfg.hydra.launcher._target_).__name__ == plugin
    if launcher == "slurm":
        assert (cfg.hydra.launcher.partition, cfg.hydra.launcher.gpus_per_node) == ("gpu", 1)


def hparams_metrics(run_dir: Path) -> list[str]:
    """The metrics of the run in TensorBoard's HParams tab: with no experiment summary (``hparams.py``), its
    scalars."""
    run = EventAccumulator(str(run_dir)).Reload()
    assert "_hparams_/session_start_info" in run.PluginTagToContent("hparams")
    return run.Tags()["scalars"]


@pytest.mark.slow
def test_parallel_sweep_writes_one_directory_per_run_and_a_summary(tmp_path):
    done = run_cli(
        "-m",
        "hydra/launcher=local_parallel",
        "model.optimizer.lr=0.005,0.001",
        "data.batch_size=32,64",
        *TINY,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    # each job's directory carries its swept values, short names
    names = [
        f"{i}_lr={lr},batch_size={size}"
        for i, (lr, size) in enumerate([(0.005, 32), (0.005, 64), (0.001, 32), (0.001, 64)])
    ]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == names
    records = {p.name[0]: json.loads((p / "metrics.json").read_text()) for p in sweep.iterdir() if p.is_dir()}
    assert all(r["status"] == "completed" for r in records.values())
    best_job = min(records, key=lambda job: records[job]["best_score"])
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert len(rows) == 4 and rows[0]["best"] == "*" and rows[0]["job"] == best_job
    assert "best/val/loss" in hparams_metrics(sweep / names[0]) and "test/psnr" in hparams_metrics(sweep / names[0])

    (sweep / "summary.md").unlink()
    report.main([str(sweep)])
    assert (sweep / "summary.md").read_text().count("| completed |") == 4


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    # a value the checks refuse stops the command before any trial (test_bad_inputs): this one fails while running
    done = run_cli("-m", "model=cnn_base", "data.val_size=5000,180", *TINY, cwd=tmp_path)
    assert done.returncode == 1 and "error: 1 of 2 trials failed; their errors are in" in done.stderr, done.stderr
    assert "Trial 0 failed" in done.stdout + done.stderr and "Sweep summary (2 runs, 1 failed)" in done.stdout
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert [(r["job"], r["status"], r["best"]) for r in rows] == [("1", "completed", "*"), ("0", "failed", "")]
    assert "split sizes [5000, 360] (data.val_size, data.test_size) leave no training data" in rows[1]["error"]


@pytest.mark.slow
def test_ddp_trains_in_two_processes_into_one_run_directory(tmp_path):
    done = run_cli(
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "model=cnn_base",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stdout + done.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs" / "cnn_base_digits").iterdir()
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 2
    # the test metrics are synced over both ranks' halves of the 2 test batches: 2 x 16 x 2 = 64 images
    rows = list(csv.DictReader(open(run_dir / "classification_report.csv")))
    assert sum(float(r["support"]) for r in rows if not r["class"].endswith(" avg")) == 64
    assert (run_dir / "run_rank1.log").is_file() and not (run_dir / "images").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir())[-1] == "last.ckpt"


@pytest.mark.slow
def test_a_sweep_of_ddp_runs_gives_one_directory_per_run(tmp_path):
    done = run_cli(
        "-m",
        "model.optimizer.lr=0.001,0.005",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *TINY,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.listdir(tmp_path / "outputs") == ["multiruns"]  # no stray run directories from the ranks
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["0_lr=0.001", "1_lr=0.005"]
    for run in runs:
        assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
        assert (run / "run_rank1.log").is_file()


def test_ddp_children_run_their_one_job_even_in_a_preset_sweep(tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from apa_lightning.tasks.distributed import hydra_ddp_child_command

    with initialize_config_module("apa_lightning.conf", version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna", "trainer=ddp"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"  # what the preset sets, and what the child must not repeat
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir, cfg.hydra.runtime.cwd = str(tmp_path / "0"), str(tmp_path)
        cfg.hydra.job.name = "train"
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # put back after the test: later runs are not swept
    HydraConfig.instance().set_config(cfg)
    command, cwd = hydra_ddp_child_command(1)
    assert command[-1] == "hydra.mode=RUN" and "hparams_search=optuna" in command
    assert f'hydra.run.dir="{tmp_path / "0"}"' in command and cwd == str(tmp_path)


def first_trial(preset: str, *overrides: str) -> list[str]:
    """The overrides of the first trial of a preset sweep: each swept key's first choice, or its interval's lower
    bound (an Optuna search)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = compose_with_hydra(f"hparams_search={preset}", *overrides).hydra.sweeper.params
    trial = []
    for parsed in OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()]):
        sweep = parsed.value()
        trial.append(f"{parsed.key_or_group}={sweep.start if hasattr(sweep, 'start') else sweep.list[0]}")
    return trial


# preset sweep -> the overrides its documented command adds; each one's first trial runs on the CIFAR-10 fixture
PRESETS_ON_CIFAR10 = {
    "cnn_v3_report": [],
    "resnet18_report": [],
    "resnet18_grid": [],
    "optuna": ["experiment=cifar10_cnn_v3"],
}
# presets whose trials are run by another test module
PRESETS_RUN_ELSEWHERE = {"notmnist_code_sizes": "tests/test_notmnist.py runs each of its four experiments"}


def test_every_preset_sweep_is_run_by_some_test():
    conf = Path(__file__).resolve().parents[1] / "conf" / "hparams_search"
    assert {p.stem for p in conf.glob("*.yaml")} == PRESETS_ON_CIFAR10.keys() | PRESETS_RUN_ELSEWHERE.keys()


@pytest.mark.parametrize("preset, overrides", PRESETS_ON_CIFAR10.items())
def test_every_preset_sweep_runs_its_first_trial(
    make_cfg, cifar10_root, fake_imagenet_weights, monkeypatch, preset, overrides
):
    from apa_lightning.tasks.train import train

    from .test_classification_training import on_cifar10_fixture

    monkeypatch.setenv("TORCH_HOME", str(fake_imagenet_weights))
    fixture = on_cifar10_fixture(cifar10_root)
    # the tiny fixture's batch size wins over the swept one (32 images of ResNet18 on the CPU take 10 s)
    trial = [o for o in first_trial(preset, *overrides) if o.split("=")[0] not in {f.split("=")[0] for f in fixture}]
    cfg = make_cfg(f"hparams_search={preset}", *overrides, *trial, *fixture)
    train(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert record["status"] == "completed" and "test/acc" in record["test"]
    for override in trial:  # the trial's values reached the run's config
        key, value = override.split("=")
        if "/" not in key:
            assert str(OmegaConf.select(cfg, key)) == value or float(OmegaConf.select(cfg, key)) == float(value)


def test_a_misspelt_sort_column_is_refused_without_writing(tmp_path):
    from apa_lightning.errors import ApaError

    fake_run(tmp_path, "0", ["lr=0.1"], completed(0.7, 0.7))
    with pytest.raises(ApaError, match=r"cannot be sorted by 'test/acc_typo'.*test/acc"):
        report.write_summary(tmp_path, sort_by="test/acc_typo")
    assert not (tmp_path / "summary.md").exists()


def test_summary_md_names_the_overrides_every_run_shares_once(tmp_path):
    fake_run(tmp_path, "0", ["model=cnn_base", "lr=0.1", "trainer.max_epochs=1"], completed(0.7, 0.7))
    fake_run(tmp_path, "1", ["model=cnn_base", "lr=0.01", "trainer.max_epochs=1"], completed(0.8, 0.8))
    report.write_summary(tmp_path)
    markdown = (tmp_path / "summary.md").read_text()
    assert "2 runs, 0 not completed" in markdown and "\nEvery run: model=cnn_base trainer.max_epochs=1\n" in markdown
    assert "| * | 1 | lr=0.01 | completed |" in markdown and "| error |" not in markdown  # no run failed
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert rows[0]["overrides"] == "model=cnn_base lr=0.01 trainer.max_epochs=1" and "error" in rows[0]


def test_ddp_fails_naming_lightning_when_its_launcher_no_longer_takes_our_rank_command(monkeypatch):
    import lightning as L
    from lightning.pytorch.strategies.launchers import subprocess_script

    from apa_lightning.errors import ApaError
    from apa_lightning.tasks import distributed

    monkeypatch.delattr(subprocess_script, "_hydra_subprocess_cmd")  # a Lightning that moved the call
    ddp = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False)
    with pytest.raises(ApaError, match=r"lightning \d.* no longer starts DDP ranks through .*_hydra_subprocess_cmd"):
        distributed.use_job_command_for_ddp_children(ddp)
    # one process, or ranks started by srun: nothing to re-launch, the run goes on
    distributed.use_job_command_for_ddp_children(L.Trainer(accelerator="cpu", devices=1, logger=False))
    monkeypatch.setenv("LOCAL_RANK", "0")  # how Lightning sees ranks started outside it (torchrun, srun)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    external = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False)
    distributed.use_job_command_for_ddp_children(external)


def test_ddp_rank_command_is_ours_once_a_run_has_set_it_up(monkeypatch):
    import lightning as L
    from lightning.pytorch.strategies.launchers import subprocess_script

    from apa_lightning.tasks import distributed

    monkeypatch.setattr(subprocess_script, "_hydra_subprocess_cmd", subprocess_script._hydra_subprocess_cmd)
    distributed.use_job_command_for_ddp_children(L.Trainer(accelerator="cpu", devices=1, logger=False))
    assert subprocess_script._hydra_subprocess_cmd is distributed.hydra_ddp_child_command
