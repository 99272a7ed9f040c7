"""Run names: the default task_name, sweep job directories, and what TensorBoard shows of a run (loss tags per
kind, the custom-scalars layout, the HParams entries, the config text)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from apa_lightning.cli.main import cli, resumed_arguments
from apa_lightning.runs.names import MAX_JOB_NAME, UNSAFE, job_subdir_name, short_names, short_value
from apa_lightning.tasks import TASKS
from apa_lightning.tasks import sweep_summary as report

TINY = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def task_name(*overrides: str) -> str:
    with initialize_config_module("apa_lightning.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True).task_name


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], "ae_digits"),
        (["model=vae", "data=mnist"], "vae_mnist"),
        (["experiment=mnist_vae"], "mnist_vae"),
        (["experiment=mnist_vae", "task_name=my_vae"], "my_vae"),
        (["hparams_search=cnn_v3_report"], "cifar10_cnn_v3"),  # the preset's experiment
        (["task=eda", "data=cifar10"], "eda_cifar10"),
        (["task=eda", "experiment=mnist_vae"], "eda_mnist"),
        (["task=detect", "model=yolo", "data=kitti"], "yolo_kitti"),
        (["task=predict", "model=yolo"], "predict_yolo"),
        (["task=eval", "ckpt_path=/x/run/ckpt.ckpt"], "eval_ae_digits"),
        # a checkpoint outside a run directory brings its own model (checkpoint_arguments adds ~model)
        (["task=eval", "~model", "data=mnist"], "eval_mnist"),
        (["task=predict", "~model"], "predict"),
    ],
)
def test_task_name_is_the_experiment_or_model_and_data_unless_given(overrides, expected):
    assert task_name(*overrides) == expected


def test_compose_config_keeps_the_default_task_name(make_cfg):
    assert make_cfg("model=dense_ae", "data=flowers").task_name == "dense_ae_flowers"


def test_job_names_carry_the_swept_values_under_short_unambiguous_names():
    swept = ["model.optimizer.lr", "model.net.dropout", "model/optimizer", "data.batch_size"]
    overrides = ["model.optimizer.lr=0.001", "trainer.max_epochs=3", "model.net.dropout=0.3", "model/optimizer=sgd"]
    assert job_subdir_name(3, swept, overrides) == "3_lr=0.001,dropout=0.3,optimizer=sgd"  # batch_size: not in job
    assert job_subdir_name(0, [], overrides) == "0"
    assert short_names(["model.optimizer.lr", "model.scheduler.lr", "model.net.dropout"]) == {
        "model.optimizer.lr": "optimizer.lr",
        "model.scheduler.lr": "scheduler.lr",
        "model.net.dropout": "dropout",
    }
    # an Optuna trial's long float is cut to 4 significant digits; lists and paths become file-system-safe
    odd = ["model.optimizer.lr=0.000123456789", "model.net.hidden=[30,20]", "model.weights=/w/yolo v8.pt"]
    name = job_subdir_name(7, ["model.optimizer.lr", "model.net.hidden", "model.weights"], odd)
    assert name == "7_lr=0.0001235,hidden=_30,20_,weights=_w_yolo_v8.pt"
    many = [f"model.net.key{i}=value{i}" for i in range(30)]
    assert len(job_subdir_name(12, [o.split("=")[0] for o in many], many)) == MAX_JOB_NAME


@pytest.mark.parametrize(
    "value, short",
    [
        ("0.000123456789", "0.0001235"),  # an Optuna trial's float: 4 significant digits
        ("-0.000123456789", "-0.0001235"),
        ("0.30000000000000004", "0.3"),
        ("0.1234567", "0.1235"),  # 9 characters: the first length that is shortened
        ("123456.789", "1.235e+05"),
        ("1.23456789e-05", "1.235e-05"),
        ("0.123456", "0.123456"),  # 8 characters stay as they are
        ("2.5e-05", "2.5e-05"),
        ("1234567890", "1234567890"),  # integers stay whole: seeds, sizes
        ("-1234567890", "-1234567890"),
        ("1_000_000", "1_000_000"),
        ("abcdefghij", "abcdefghij"),  # not a number
        ("[0.123456789]", "[0.123456789]"),  # a list is not one number
    ],
)
def test_long_decimal_numbers_are_shortened_to_four_significant_digits(value, short):
    assert short_value(value) == short
    # the sweep job's directory name takes the short value (made file-system-safe)
    name = job_subdir_name(2, ["model.optimizer.lr"], [f"model.optimizer.lr={value}"])
    assert name == f"2_lr={UNSAFE.sub('_', short)}"


def no_training(cfg: DictConfig) -> float:
    """A stand-in for the training task: records the run's HParams entries and a completed metrics.json."""
    from apa_lightning.runs.hparams import hparams_for_tensorboard
    from apa_lightning.runs.names import sweep_context
    from apa_lightning.runs.record import RunRecord

    output_dir = Path(cfg.paths.output_dir)
    (output_dir / "hparams.json").write_text(json.dumps(list(hparams_for_tensorboard(cfg, *sweep_context()))))
    RunRecord(cfg, output_dir).close("completed", best_score=0.5, test={})
    return 0.5


def sweep_in_process(monkeypatch, root: Path, *overrides: str) -> Path:
    """``python -m apa_lightning -m <overrides>`` in this process, with ``no_training`` as the task; the sweep
    directory."""
    monkeypatch.setitem(TASKS, "train", f"{__name__}:no_training")
    monkeypatch.setattr(sys, "argv", ["apa_lightning", "-m", *overrides, f"paths.root_dir={root}"])
    cli()
    (sweep,) = (root / "outputs" / "multiruns").iterdir()
    return sweep


def test_a_command_line_sweep_names_each_job_by_its_swept_values(monkeypatch, tmp_path):
    sweep = sweep_in_process(
        monkeypatch, tmp_path, "model=cnn_base", "model.optimizer.lr=0.001,0.0001", "model.net.dropout=0.3,0.5"
    )
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == [
        "0_lr=0.001,dropout=0.3",
        "1_lr=0.001,dropout=0.5",
        "2_lr=0.0001,dropout=0.3",
        "3_lr=0.0001,dropout=0.5",
    ]
    keys = json.loads((sweep / jobs[0] / "hparams.json").read_text())
    assert keys[:2] == ["(swept) model/optimizer/lr", "(swept) model/net/dropout"]  # the swept keys first
    assert "model/optimizer/lr" not in keys  # not twice
    assert not [k for k in keys if "_target_" in k or k.endswith(("_dir", "num_workers"))]
    assert "model/optimizer" in keys and "model/net" in keys  # the classes, under their objects' keys
    # the summary numbers the jobs as before
    assert [row["job"] for row in report.collect_runs(sweep)] == ["0", "1", "2", "3"]
    assert json.loads((sweep / jobs[0] / "metrics.json").read_text())["task_name"] == "cnn_base_digits"


def test_a_preset_sweep_names_each_job_by_its_preset_params(monkeypatch, tmp_path):
    sweep = sweep_in_process(monkeypatch, tmp_path, "hparams_search=resnet18_grid", "data.batch_size=32")
    jobs = sorted((p.name for p in sweep.iterdir() if p.is_dir()), key=lambda name: int(name.split("_")[0]))
    assert jobs == [
        "0_optimizer=sgd,lr=0.01",
        "1_optimizer=sgd,lr=0.001",
        "2_optimizer=asgd,lr=0.01",
        "3_optimizer=asgd,lr=0.001",
    ]
    keys = json.loads((sweep / jobs[2] / "hparams.json").read_text())
    assert keys[:2] == ["(swept) model/optimizer", "(swept) model/optimizer/lr"]


def test_an_optuna_sweep_names_each_trial_by_its_sampled_and_command_line_values(monkeypatch, tmp_path):
    sweep = sweep_in_process(
        monkeypatch,
        tmp_path,
        "hparams_search=optuna",
        "model=cnn_base",
        "hydra.sweeper.n_trials=2",
        "data.batch_size=16,32",
    )
    assert (sweep / "multirun.yaml").is_file()  # written by SweepSummary: Optuna's sweeper writes none
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    pattern = r"{}_lr=[0-9.e-]+,weight_decay=[0-9.e-]+,dropout=[0-9.e-]+,batch_size=(16|32)"
    assert [re.fullmatch(pattern.format(i), job) is not None for i, job in enumerate(jobs)] == [True, True], jobs


def test_resuming_a_sweep_job_quotes_its_directory_for_hydra(tmp_path):
    run = tmp_path / "multiruns" / "x" / "3_lr=0.001,dropout=0.3"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- model.optimizer.lr=0.001\n- model.net.dropout=0.3\n")
    arguments = resumed_arguments([f"resume={run}"])
    assert arguments[0] == f"resume='{run}'" and f"hydra.run.dir='{run.resolve()}'" in arguments
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(arguments)}
    assert parsed["resume"] == str(run) and parsed["model.net.dropout"] == 0.3


def events(run_dir: Path) -> EventAccumulator:
    return EventAccumulator(str(run_dir), size_guidance={"tensors": 0}).Reload()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(model)``: the run directory of a tiny training run of ``model`` (each model trained once)."""
    from apa_lightning.tasks.train import compose_config, train

    runs: dict[str, Path] = {}

    def run(model: str) -> Path:
        if model not in runs:
            root = tmp_path_factory.mktemp(model)
            extra = ["callbacks.classification_report=null" if model == "cnn_base" else "callbacks.image_grids=null"]
            cfg = compose_config(
                [f"paths.root_dir={root}", f"paths.output_dir={root / 'run'}", f"model={model}", *TINY, *extra]
            )
            train(cfg)
            runs[model] = root / "run"
        return runs[model]

    return run


@pytest.mark.parametrize(
    "model, kind, metric", [("ae", "mse", "psnr"), ("vae", "elbo_bce", "psnr"), ("cnn_base", "cross_entropy", "acc")]
)
def test_tensorboard_files_each_loss_under_its_kind_with_a_train_and_val_chart(trained, model, kind, metric):
    run_dir = trained(model)
    assert not (run_dir / "tensorboard").exists()  # the event files lie in the run directory: TensorBoard's run name
    run = events(run_dir)
    scalars = set(run.Tags()["scalars"])
    assert {f"train/loss_{kind}", f"val/loss_{kind}", f"test/loss_{kind}", "best/val/loss"} <= scalars
    assert not {"train/loss", "val/loss", "test/loss"} & scalars
    assert len(run.Scalars(f"val/loss_{kind}")) == 2
    # metrics.json and the checkpoint monitor keep the plain names
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["optimized_metric"] == "val/loss" and "test/loss" in record["test"]

    (layout_event,) = run.Tensors("custom_scalars__config__")
    (category,) = layout_pb2.Layout.FromString(layout_event.tensor_proto.string_val[0]).category
    charts = {chart.title: list(chart.multiline.tag) for chart in category.chart}
    assert charts == {
        f"loss ({kind})": [f"^train/loss_{kind}$", f"^val/loss_{kind}$"],
        metric: [f"^train/{metric}$", f"^val/{metric}$"],
    }


def test_hparams_hold_real_hyperparameters_and_the_config_is_a_text_entry(trained):
    run_dir = trained("ae")
    run = events(run_dir)
    content = run.PluginTagToContent("hparams")
    # no experiment summary: TensorBoard would take one run's as the columns of every run in its logdir
    assert set(content) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    names = list(start.hparams)
    assert {"seed", "trainer/max_epochs", "model/optimizer/lr", "model/net/in_channels", "data/batch_size"} <= set(
        names
    )
    assert not [n for n in names if "_target_" in n or n.endswith(("num_workers", "_dir"))]
    assert (start.hparams["model/optimizer"].string_value, start.hparams["model/net"].string_value) == (
        "Adam",
        "ConvAutoencoder",
    )
    assert start.group_name == f"{run_dir.parent.name}/run"  # the HParams tab's Trial ID
    # the epoch scalar counts from 1, once per epoch, as metrics.csv does
    epochs = [(event.step, event.value) for event in run.Scalars("epoch")]
    assert [value for _, value in epochs] == [1, 2]

    assert "model_summary/text_summary" in run.Tags()["tensors"]  # callbacks/model_summary.py's Text entry
    (text,) = run.Tensors("config/text_summary")
    markdown = text.tensor_proto.string_val[0].decode()
    assert markdown.startswith("```yaml\n") and markdown.endswith("```")
    assert "task_name: ae_digits" in markdown
    assert "_target_: apa_lightning.models.autoencoder.AutoencoderModule" in markdown


def test_tensorboard_shows_the_swept_hyperparameters_beside_other_runs(tmp_path):
    from tensorboard.plugins.hparams.backend_context import Context

    from apa_lightning.runs.hparams import SWEPT, hparams_summaries, trial_name

    def content(params: dict, run_dir: Path) -> dict[str, bytes]:
        summaries = hparams_summaries(params, trial_name(run_dir))
        return {s.value[0].tag: s.value[0].metadata.plugin_data.content for s in summaries}

    sweep = tmp_path / "outputs" / "multiruns" / "2026-01-02_03-04-05_abcdef"
    constants = {f"data/{key}": 1 for key in ("batch_size", "channels", "image_size", "normalize", "split_seed")}
    runs = {
        f"sweep{i}": content({f"{SWEPT}model/optimizer/lr": lr, **constants}, sweep / f"{i}_lr={lr}")
        for i, lr in enumerate((0.001, 0.01))
    }
    other = tmp_path / "outputs" / "runs" / "cnn_base_digits" / "2026-01-02_03-04-06_fedcba"
    runs["other"] = content({"model/optimizer/lr": 0.1, **{k: 2 for k in constants}}, other)
    # what TensorBoard 2.21 does with the runs of a logdir: the backend makes the experiment (no run has one), the
    # HParams tab sorts differing hyperparameters first (stable) and ticks the first five
    experiment = Context(None).experiment_from_metadata(None, "", False, runs, None)
    ticked = [info.name for info in sorted(experiment.hparam_infos, key=lambda info: not info.differs)][:5]
    assert ticked[0] == "(swept) model/optimizer/lr"
    # the Trial ID column (about 20 characters) starts with what differs
    names = [trial_name(sweep / "0_lr=0.001"), trial_name(sweep / "1_lr=0.01"), trial_name(other)]
    assert names == [
        "0_lr=0.001 (2026-01-02_03-04-05_abcdef)",
        "1_lr=0.01 (2026-01-02_03-04-05_abcdef)",
        "cnn_base_digits/2026-01-02_03-04-06_fedcba",
    ]
    assert len({name[:12] for name in names}) == 3


def test_a_swept_config_group_shows_its_option_in_the_hparams(make_cfg):
    from apa_lightning.runs.hparams import hparams_for_tensorboard

    cfg = make_cfg("model=dae")
    flat = hparams_for_tensorboard(cfg, ["model", "model.optimizer.lr"], {"model": "dae", "model/optimizer": "adam"})
    assert list(flat)[:2] == ["(swept) model", "(swept) model/optimizer/lr"]
    assert (flat["(swept) model"], flat["(swept) model/optimizer/lr"]) == ("dae", cfg.model.optimizer.lr)
    assert "model" not in flat and flat["model/optimizer"] == "Adam"  # the option, not AutoencoderModule


def test_a_config_in_a_sub_folder_names_one_folder():
    # task_name must be a folder name (config_checks): experiment=mine/quick would have been refused
    from apa_lightning.runs.names import task_name_for

    assert task_name_for("train", {"experiment": "mine/quick"}) == "mine_quick"
    assert task_name_for("eval", {"model": "sub/ae", "data": "digits"}) == "eval_sub_ae_digits"
