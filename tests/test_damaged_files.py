"""Damaged or misplaced files a run reads (its own run directory on a resume, a sweep's directory, KITTI files, a
data folder that cannot be written): each ends with one ``error:`` paragraph naming the file, the cause and the
way out, before any training, instead of a traceback or advice that leads back to the same file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from apa_lightning.errors import ApaError, user_error

from .test_bad_inputs import assert_one_clear_error
from .test_resume import run_cli

TRAINED = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "logger=csv",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished two-epoch run directory of the default autoencoder (checkpoints epoch002.ckpt and last.ckpt)."""
    import sys

    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["apa_lightning", *TRAINED, f"paths.root_dir={root}"])
        from apa_lightning.cli.main import cli

        cli()
    (run_dir,) = (root / "outputs" / "runs").glob("*/*")
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A copy of the finished run, to damage."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def resume(monkeypatch, capsys, tmp_path: Path, run_dir: Path) -> tuple[int, str]:
    return run_cli(monkeypatch, capsys, tmp_path, f"resume={run_dir}", "trainer.max_epochs=3")


def assert_nothing_trained(run_dir: Path, last_before: bytes) -> None:
    """The refused resume started no epoch: no other checkpoint, last.ckpt untouched."""
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} <= {"epoch001.ckpt", "epoch002.ckpt", "last.ckpt"}
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == last_before


def test_resume_with_a_damaged_metrics_json_is_refused_before_training(run_copy, monkeypatch, capsys, tmp_path):
    (run_copy / "metrics.json").write_text('{"status": "comp')
    before = (run_copy / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    last_before = (run_copy / "checkpoints" / "last.ckpt").read_bytes()
    code, stderr = resume(monkeypatch, capsys, tmp_path, run_copy)
    assert_one_clear_error(code, stderr, [f"{run_copy / 'metrics.json'} is damaged", "JSON", "line 1", "delete it"])
    assert (run_copy / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before
    assert_nothing_trained(run_copy, last_before)


@pytest.mark.parametrize("content", ["- model=ae\n- [trainer.max_epochs=2\n", "\xff\xfe garbage", "just: a mapping\n"])
def test_resume_with_damaged_overrides_names_the_file(content, run_copy, monkeypatch, capsys, tmp_path):
    (run_copy / ".hydra" / "overrides.yaml").write_bytes(content.encode("latin-1"))
    last_before = (run_copy / "checkpoints" / "last.ckpt").read_bytes()
    code, stderr = resume(monkeypatch, capsys, tmp_path, run_copy)
    paragraph = assert_one_clear_error(
        code, stderr, [f"{run_copy / '.hydra' / 'overrides.yaml'} is damaged", "hydra.overrides.task"]
    )
    assert "model=" not in paragraph.split("damaged")[1].split("(")[0]
    assert_nothing_trained(run_copy, last_before)


def test_resume_without_overrides_yaml_names_it_instead_of_blaming_an_override(run_copy, monkeypatch, capsys, tmp_path):
    (run_copy / ".hydra" / "overrides.yaml").unlink()
    last_before = (run_copy / "checkpoints" / "last.ckpt").read_bytes()
    code, stderr = resume(monkeypatch, capsys, tmp_path, run_copy)
    paragraph = assert_one_clear_error(code, stderr, [f"{run_copy / '.hydra' / 'overrides.yaml'} is missing"])
    assert "drop the model=" not in paragraph
    assert_nothing_trained(run_copy, last_before)
    assert not list((tmp_path / "outputs").glob("runs/*/*")), "a new run directory was made"


def test_a_deleted_last_ckpt_points_to_the_epoch_checkpoint(run_copy, monkeypatch, capsys, tmp_path):
    (run_copy / "checkpoints" / "last.ckpt").unlink()
    code, stderr = resume(monkeypatch, capsys, tmp_path, run_copy)
    epoch = run_copy / "checkpoints" / "epoch002.ckpt"
    paragraph = assert_one_clear_error(code, stderr, ["has no checkpoints/last.ckpt", f"cp {epoch}", "2 finished"])
    assert "not a run directory" not in paragraph


def test_a_truncated_last_ckpt_points_to_another_intact_checkpoint_or_says_it_cannot_resume(
    run_copy, monkeypatch, capsys, tmp_path
):
    last = run_copy / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:3000])
    code, stderr = resume(monkeypatch, capsys, tmp_path, run_copy)
    paragraph = assert_one_clear_error(code, stderr, [f"{last} is damaged", "epoch002.ckpt", f"cp {last.parent}"])
    assert "e.g. <run dir>/checkpoints/last.ckpt" not in paragraph

    (run_copy / "checkpoints" / "epoch002.ckpt").unlink()
    code, stderr = resume(monkeypatch, capsys, tmp_path, run_copy)
    assert_one_clear_error(code, stderr, [f"{last} is damaged", "cannot be continued", "start it again"])


def fake_sweep(root: Path) -> Path:
    """A sweep's directory: multirun.yaml and two trials, one completed, one failed."""
    sweep = root / "multiruns" / "2026-01-01_00-00-00_abcdef"
    for number, status in ((0, "completed"), (1, "failed")):
        trial = sweep / f"{number}_lr={0.1 / (number + 1)}"
        (trial / ".hydra").mkdir(parents=True)
        (trial / ".hydra" / "overrides.yaml").write_text(f"- model.optimizer.lr={0.1 / (number + 1)}\n")
        (trial / "metrics.json").write_text(json.dumps({"status": status}))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


@pytest.mark.parametrize("key", ["resume", "ckpt_path"])
def test_a_sweep_directory_is_named_as_such_with_its_trials(key, monkeypatch, capsys, tmp_path):
    sweep = fake_sweep(tmp_path)
    task = ["task=eval"] if key == "ckpt_path" else []
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *task, f"{key}={sweep}")
    assert_one_clear_error(
        code,
        stderr,
        ["is a sweep's directory", "0_lr=0.1 (completed)", "1_lr=0.05 (failed)", f"e.g. {key}={sweep}/0_lr=0.1)"],
    )


def test_eval_of_a_run_with_a_damaged_config_yaml_names_it(run_copy, monkeypatch, capsys, tmp_path):
    (run_copy / ".hydra" / "config.yaml").write_text("data: {image_size: 28\n")
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, "task=eval", f"ckpt_path={run_copy}")
    assert_one_clear_error(code, stderr, [f"{run_copy / '.hydra' / 'config.yaml'} is damaged", "YAML", "ckpt_path="])


@pytest.mark.parametrize("where", ["run directory", "checkpoint"])
def test_eval_of_a_run_without_overrides_yaml_names_it(where, run_copy, monkeypatch, capsys, tmp_path):
    """Without the file, eval used to treat the run as a bare checkpoint: its own overrides silently dropped."""
    (run_copy / ".hydra" / "overrides.yaml").unlink()
    ckpt = run_copy if where == "run directory" else run_copy / "checkpoints" / "last.ckpt"
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, "task=eval", f"ckpt_path={ckpt}")
    assert_one_clear_error(code, stderr, [f"{run_copy / '.hydra' / 'overrides.yaml'} is missing", "hydra.yaml"])


OPTUNA = ["-m", "hparams_search=optuna", "model=cnn_base", "trainer=debug", "logger=csv", "hydra.sweeper.n_trials=2"]


def test_an_optuna_study_whose_trials_all_fail_ends_with_a_summary_and_one_error(monkeypatch, capsys, tmp_path):
    # every trial fails when its Trainer is built (a key the Trainer does not take)
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *OPTUNA, "+trainer.max_epoch=1")
    assert_one_clear_error(code, stderr, ["all 2 trials failed", "summary.md"])
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    summary = (sweep / "summary.md").read_text()
    assert summary.count("| failed |") == 2 and "trainer.max_epoch is not a parameter" in summary


def test_the_templates_optuna_test_with_trainer_debug_completes(monkeypatch, capsys, tmp_path):
    # lightning-hydra-template's tests/test_sweeps.py::test_optuna_sweep: fast_dev_run trials give their one score
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *OPTUNA, "hydra.sweeper.sampler.n_startup_trials=1")
    assert code == 0, stderr
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    scores = [json.loads(p.read_text())["best_score"] for p in sweep.glob("*/metrics.json")]
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
    assert (sweep / "optimization_results.yaml").is_file() and (sweep / "summary.md").is_file()


def test_a_glob_sweep_gets_its_summary_and_the_report_rebuilds_it(monkeypatch, capsys, tmp_path):
    from apa_lightning.tasks.sweep_summary import main as report

    argv = ["-m", "experiment=glob(font_*)", "trainer=debug", "logger=csv"]
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *argv)
    assert code == 0, stderr
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    assert "experiment=font_ae" in (sweep / "summary.md").read_text()
    (sweep / "summary.md").unlink()
    report([str(sweep)])
    summary = (sweep / "summary.md").read_text()
    assert "experiment=font_ae" in summary and "experiment=font_dae" in summary


def digits_classifier(tmp_path: Path) -> Path:
    """A checkpoint of an untrained CNN classifier of 28x28 grey images of the ten digits, with the class names and
    normalisation a digits run saves."""
    import torch

    from apa_lightning.models.classifier import ClassifierModule

    model = ClassifierModule(
        net={"_target_": "apa_lightning.nets.cnn.CNNBase", "num_classes": 10, "in_channels": 1, "image_size": 28},
        optimizer={"_target_": "torch.optim.Adam", "lr": 0.001},
    )
    data = {"image_size": 28, "channels": 1, "normalize": "none"}
    state = {"classes": [str(d) for d in range(10)], "mean": None, "std": None}
    path = tmp_path / "digits.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "datamodule_hyper_parameters": data,
            "DigitsDataModule": state,
        },
        path,
    )
    return path


@pytest.mark.parametrize("channels", [[], ["data.channels=3"]])
def test_eval_of_a_grey_network_on_colour_data_says_it_takes_grey_images(channels, monkeypatch, capsys, tmp_path):
    from .test_bad_inputs import eurosat_folder

    data = eurosat_folder(tmp_path, corrupt=False)
    checkpoint = digits_classifier(tmp_path)
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, "task=eval", f"ckpt_path={checkpoint}", *data, *channels)
    paragraph = assert_one_clear_error(code, stderr, ["1-channel (grey) images", "EuroSATDataModule", "data=digits"])
    assert "set data.channels" not in paragraph and "use data.channels" not in paragraph
    assert not list((tmp_path / "outputs").glob("runs/*/*")), "refused after the run directory was made"


def test_the_data_check_of_eval_resolves_only_the_keys_it_compares(tmp_path):
    from omegaconf import OmegaConf

    from apa_lightning.models.from_checkpoint import check_data_fits

    data = OmegaConf.create(
        {
            "_target_": "apa_lightning.data.notmnist.NotMNISTDataModule",
            "split_dir": "${oc.env:APA_TEST_VARIABLE_THAT_IS_NEVER_SET}",  # like ${hydra:runtime.output_dir}
            "image_size": 28,
            "channels": 1,
        }
    )
    checkpoint = {"datamodule_hyper_parameters": {"image_size": 28, "channels": 1}}
    check_data_fits(checkpoint, data, tmp_path / "x.ckpt")  # no InterpolationResolutionError
    data.image_size = 32
    with pytest.raises(ApaError, match="trained on data.image_size=28, but data.image_size=32"):
        check_data_fits(checkpoint, data, tmp_path / "x.ckpt")


def test_eval_of_a_digits_classifier_on_letters_is_refused_naming_both_class_lists(monkeypatch, capsys, tmp_path):
    from .test_notmnist import write_notmnist

    write_notmnist(tmp_path / "letters" / "notMNIST_small")
    checkpoint = digits_classifier(tmp_path)
    overrides = ["task=eval", f"ckpt_path={checkpoint}", "data=notmnist", f"data.data_dir={tmp_path / 'letters'}"]
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *overrides, "trainer=debug", "logger=csv")
    assert_one_clear_error(code, stderr, ["classes 0, 1, 2", "NotMNISTDataModule has the classes A, B, C", "predict"])
    (run_dir,) = (tmp_path / "outputs" / "runs").glob("*/*")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and record["test"] == {}


def test_a_data_dir_that_cannot_be_written_is_named(monkeypatch, capsys, tmp_path):
    # root may write anywhere: a regular file where the dataset's folder belongs makes the path unwritable for
    # anyone (ENOTDIR), deterministically; a read-only folder (EACCES, EROFS) gets the same message
    from .conftest import write_idx

    source = tmp_path / "idx"
    source.mkdir()
    for split, n in (("train", 40), ("t10k", 20)):
        write_idx(source / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28)), compress=True)
        write_idx(source / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, compress=True)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "MNIST").write_text("a file where MNIST's folder belongs")
    overrides = ["data=mnist", f"data.source_dir={source}", f"paths.data_dir={data_dir}", "trainer=debug"]
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *overrides, "logger=csv")
    assert_one_clear_error(
        code, stderr, [f"{data_dir / 'MNIST' / 'raw'} cannot be written", "ENOTDIR", "paths.data_dir"]
    )


def test_read_only_and_file_in_the_way_errors_are_user_errors_and_others_are_not():
    import errno

    from apa_lightning.errors import user_error

    assert "make that folder writable" in user_error(PermissionError(errno.EACCES, "Permission denied", "/d/x"))
    assert "EROFS" in user_error(OSError(errno.EROFS, "Read-only file system", "/d/x"))
    assert user_error(OSError(errno.EIO, "Input/output error", "/d/x")) is None
    assert user_error(PermissionError(errno.EACCES, "Permission denied")) is None  # no file named: a bug


def kitti(tmp_path: Path) -> Path:
    from .test_detection import write_kitti

    return write_kitti(tmp_path / "kitti", count=3)


def test_a_kitti_label_file_that_is_not_text_is_named_with_its_line(tmp_path):
    from apa_lightning.detection.kitti import KittiDetectionData

    root = kitti(tmp_path)
    label = root / "training" / "label_2" / "000002.txt"
    label.write_bytes(label.read_bytes() + b"Car \xff\xfe 0 -1.5 10 10 20 40 1.5 1.6 3.9 1.0 1.7 20.0 -1.5\n")
    lines = label.read_bytes().count(b"\n")
    with pytest.raises(ApaError, match=f"{label}, line {lines}: not text") as error:
        KittiDetectionData(str(root), {"Car": "car"}).prepare(tmp_path)
    assert user_error(error.value) and not (root / "yolo").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_kitti_boxes_that_are_not_finite_are_refused_with_file_and_line(value, tmp_path):
    from apa_lightning.detection.kitti import KittiDetectionData

    root = kitti(tmp_path)
    label = root / "training" / "label_2" / "000002.txt"
    label.write_text(label.read_text() + f"Car 0.0 0 -1.5 10 10 {value} 40 1.5 1.6 3.9 1.0 1.7 20.0 -1.5\n")
    lines = label.read_text().count("\n")
    with pytest.raises(ApaError, match=f"{label}, line {lines}: not a KITTI label line .*finite"):
        KittiDetectionData(str(root), {"Car": "car"}).prepare(tmp_path)
    assert not (root / "yolo").exists()


def test_an_empty_kitti_image_is_named(tmp_path):
    from apa_lightning.detection.kitti import KittiDetectionData

    root = kitti(tmp_path)
    image = root / "training" / "image_2" / "000001.png"
    image.write_bytes(b"")
    with pytest.raises(ApaError, match=f"{image} cannot be read as an image .*0 bytes"):
        KittiDetectionData(str(root), {"Car": "car"}).prepare(tmp_path)
    assert not (root / "yolo").exists() and not list(root.glob(".yolo.partial-*"))


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("data.val_size=abc", "an integer >= 1"),
        ("data.test_size=-3", "an integer >= 1"),
        ("data.split_seed=abc", "an integer"),
        ("callbacks.epoch_seed.seed=abc", "an integer, or null"),
        ("callbacks.model_checkpoint.mode=best", "min or max"),
        ("callbacks.model_checkpoint.save_top_k=-3", "an integer >= -1"),
        ("callbacks.model_checkpoint.save_last=maybe", "true, false or link"),
        ("callbacks.lr_monitor.logging_interval=batch", "step, epoch or null"),
        ("callbacks.progress_bar.min_interval_s=abc", "a number of seconds >= 0"),
        ("callbacks.image_grids.num_images=-3", "an integer >= 1"),
        ("callbacks.image_grids.num_samples=abc", "an integer >= 1"),
        ("optimized_mode=maximise", "min or max"),
        ("callbacks.model_summary.depth=abc", "an integer >= 0"),
        ("trainer.gradient_clip_val=-1", "a number >= 0, or null"),
        ("eda.samples_per_class=-3", "an integer >= 1"),
    ],
)
def test_settings_that_reached_the_run_unchecked_are_refused_by_name(override, allowed, make_cfg):
    # found by the pass over every setting of conf/ (docs/errors.md): each gave a traceback, a message naming
    # another key, or nothing until training
    from apa_lightning.cli.config_checks import check_config

    key, _, value = override.partition("=")
    with pytest.raises(ApaError, match=f"{key}={value} is not allowed: {key} must be {allowed}"):
        check_config(make_cfg(override))
