"""task=eval and task=predict: a checkpoint (or a run directory) re-tested on its own or another data config,
and run on image files of any size and colour mode."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from apa_lightning.cli.main import cli
from apa_lightning.data.digits import DigitsDataModule
from apa_lightning.data.mnist import MNISTDataModule
from apa_lightning.models.autoencoder import AutoencoderModule
from apa_lightning.models.classifier import ClassifierModule
from apa_lightning.runs.checkpoint_lookup import checkpoint_arguments
from apa_lightning.runs.figures import GAP, MARGIN, line_height, text_width
from apa_lightning.tasks.image_files import read_image

from .test_figures import grid_size

TINY = [
    "trainer.accelerator=cpu",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=4",
    "logger=csv",
]


def run_cli(root: Path, *overrides: str) -> Path:
    """``python -m apa_lightning <overrides>`` in this process, under ``root``; the run directory it made."""
    before = set((root / "outputs" / "runs").glob("*/*"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MPLCONFIGDIR", str(root / "mpl"))
        patch.setattr(sys, "argv", ["apa_lightning", *overrides, f"paths.root_dir={root}"])
        cli()
    (run_dir,) = set((root / "outputs" / "runs").glob("*/*")) - before
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A classifier, an autoencoder, a DAE and a VAE trained for a few steps on the embedded digits (CLI run
    dirs); the DAE and the VAE are tested too (random test noise and codes, which task=eval must draw alike)."""
    root = tmp_path_factory.mktemp("trained")
    return {
        "classifier": run_cli(root, "model=cnn_base", "trainer.max_epochs=2", *TINY),
        "ae": run_cli(root, "model=ae", "trainer.max_epochs=1", "test=false", *TINY),  # only its weights are used
        **{name: run_cli(root, f"model={name}", "trainer.max_epochs=1", *TINY) for name in ("dae", "vae")},
    }


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def digit_test_images(n: int) -> torch.Tensor:
    """The first ``n`` uint8 test images of the digits datamodule, ``(n, 1, 28, 28)``."""
    datamodule = DigitsDataModule()
    datamodule.setup("test")
    return datamodule.test_set.images[:n]


def test_eval_of_a_run_directory_reproduces_its_test_metrics(runs, tmp_path):
    trained = runs["classifier"]
    run_dir = run_cli(tmp_path, "task=eval", f"ckpt_path={trained}")
    record, original = metrics(run_dir), metrics(trained)
    assert run_dir.parent.name == "eval_cnn_base_digits" and record["status"] == "completed"
    best = Path(original["best_checkpoint"])
    assert record["checkpoint"] == str(best) and record["epochs"] == int(best.stem.removeprefix("epoch"))  # from 1
    assert set(record["test"]) == set(original["test"]) >= {"test/acc", "test/loss", "test/mca", "test/macro_f1"}
    for name, value in original["test"].items():
        assert record["test"][name] == pytest.approx(value, abs=1e-6), name
    assert (run_dir / "classification_report.csv").read_text() == (trained / "classification_report.csv").read_text()
    assert (run_dir / "confusion_matrix.png").is_file() and (run_dir / "classification_report.txt").is_file()
    assert not (run_dir / "checkpoints").exists()
    # the run's own overrides came along: the same 4 test batches
    assert "trainer.limit_test_batches=4" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    # the summary is logged once (no table of Lightning's besides), so run.log has it too
    log = (run_dir / "run.log").read_text()
    assert log.count(f"Test metrics ({best}):") == 1 and "test/acc" in log and "Run directory:" in log


@pytest.mark.parametrize("name", ["dae", "vae"])
def test_eval_reproduces_the_random_test_of_a_dae_and_a_vae(runs, tmp_path, name, capsys):
    trained = runs[name]
    run_dir = run_cli(tmp_path, "task=eval", f"ckpt_path={trained}", "logger=tensorboard")
    record, original = metrics(run_dir), metrics(trained)
    assert run_dir.parent.name == f"eval_{name}_digits" and record["status"] == "completed"
    # the DAE's noisy inputs and the VAE's sampled codes are drawn from the run's seed as in the training run's test
    assert len(original["test"]) > 4 and set(record["test"]) == set(original["test"])
    for metric, value in original["test"].items():
        assert record["test"][metric] == pytest.approx(value, abs=1e-6), metric
    printed = capsys.readouterr()
    assert "DataLoader 0" not in printed.out + printed.err  # Lightning's results table: log_summary shows them
    # TensorBoard as in training: the loss under its kind, the layout and the config text
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0}).Reload()
    kind = "mse" if name == "dae" else "elbo_bce"
    assert f"test/loss_{kind}" in events.Tags()["scalars"] and "test/loss" not in events.Tags()["scalars"]
    assert {"config/text_summary", "custom_scalars__config__"} <= set(events.Tags()["tensors"])


def test_eval_normalises_with_the_statistics_saved_in_the_checkpoint(runs, tmp_path):
    # a checkpoint outside any run directory whose run normalised with data.normalize=dataset
    checkpoint = torch.load(metrics(runs["classifier"])["best_checkpoint"], weights_only=True)
    checkpoint["datamodule_hyper_parameters"]["normalize"] = "dataset"
    checkpoint["DigitsDataModule"].update(mean=[0.25], std=[0.5])
    torch.save(checkpoint, tmp_path / "model.ckpt")
    run_dir = run_cli(
        tmp_path, "task=eval", f"ckpt_path={tmp_path / 'model.ckpt'}", "data.normalize=dataset", *TINY[:1], "logger=csv"
    )
    # named after the data, not after the default model config, which its config does not name
    assert run_dir.parent.name == "eval_digits"
    assert "~model" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "model" not in OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    datamodule = DigitsDataModule()
    datamodule.setup("test")
    x, y = datamodule.test_set.images.float() / 255, datamodule.test_set.labels
    model = ClassifierModule.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True).eval()
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model((x - 0.25) / 0.5), y).item()
    assert metrics(run_dir)["test"]["test/loss"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("name", "outputs"),
    [("classifier", ["classification_report.csv", "confusion_matrix.png"]), ("ae", ["images/reconstructions.png"])],
)
def test_eval_of_a_bare_checkpoint_writes_its_familys_report_or_grids(runs, tmp_path, name, outputs):
    # outside a run directory no model config chooses the callbacks: the checkpoint's module does
    bare = tmp_path / "model.ckpt"
    shutil.copy(runs[name] / "checkpoints" / "last.ckpt", bare)
    run_dir = run_cli(tmp_path, "task=eval", f"ckpt_path={bare}", *TINY)
    assert metrics(run_dir)["status"] == "completed"
    assert [o for o in outputs if (run_dir / o).is_file()] == outputs


def test_eval_on_another_data_config_keeps_the_networks_input(runs, tmp_path, idx_source):
    trained = runs["ae"]
    run_dir = run_cli(
        tmp_path,
        "task=eval",
        f"ckpt_path={trained}/checkpoints/last.ckpt",
        "data=mnist",
        f"data.source_dir={idx_source}",
        "data.val_size=10",
    )
    overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "data.image_size=28" in overrides and "data.channels=1" in overrides and "data.normalize=none" in overrides
    record = metrics(run_dir)
    assert record["checkpoint"] == str(trained / "checkpoints" / "last.ckpt")
    assert set(record["test"]) == {"test/loss", "test/mse", "test/psnr", "test/ssim"}
    # the test set is the fixture's 20 MNIST test images (random pixels), the model the checkpoint's
    mnist = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False, val_size=10)
    mnist.setup("test")
    x = mnist.test_set.images.float() / 255
    model = AutoencoderModule.load_from_checkpoint(trained / "checkpoints" / "last.ckpt", weights_only=True).eval()
    with torch.no_grad():
        assert record["test"]["test/mse"] == pytest.approx(torch.nn.functional.mse_loss(model(x), x).item(), abs=1e-6)
    assert (run_dir / "images" / "reconstructions.png").is_file()  # the test's picture, as training draws it


def test_checkpoint_arguments_carry_the_runs_config_and_resolve_the_checkpoint(runs):
    trained = runs["classifier"]
    best = metrics(trained)["best_checkpoint"]
    expanded = checkpoint_arguments(["task=eval", f"ckpt_path={trained}", "data.batch_size=7"])
    assert expanded[:3] == ["task=eval", f"ckpt_path={best}", "model=cnn_base"]
    assert expanded[-2:] == ["hydra.mode=RUN", "data.batch_size=7"]
    assert not any(a.startswith(("task_name=", "hydra.run")) for a in expanded)
    switched = checkpoint_arguments(["task=predict", f"ckpt_path={best}", "data=mnist", "data.channels=3"])
    assert "data.image_size=28" in switched and "data.channels=1" not in switched
    assert checkpoint_arguments(["task=predict", "ckpt_path=/x/best.pt"]) == [
        "task=predict",
        "ckpt_path=/x/best.pt",
        "model=yolo",
    ]
    assert checkpoint_arguments(["ckpt_path=/x/last.ckpt"]) == ["ckpt_path=/x/last.ckpt"]  # training: resume's
    # a checkpoint outside a run directory brings its own model: no model config (nor its name) unless one is named
    bare = ["task=eval", "ckpt_path=/x/model.ckpt", "data=mnist"]
    assert checkpoint_arguments(bare) == ["task=eval", "ckpt_path=/x/model.ckpt", "~model", "data=mnist"]
    assert checkpoint_arguments([*bare, "model=cnn_base"]) == [*bare, "model=cnn_base"]
    assert checkpoint_arguments(["task=eval", "ckpt_path=/x/best.pt"]) == ["task=eval", "ckpt_path=/x/best.pt"]


def test_eval_of_a_run_given_a_task_name_is_named_after_it_unless_named_itself(runs, tmp_path):
    # the classifier's run as if it had been run with task_name=my_exp: Hydra keeps the value in its saved config
    trained = tmp_path / "my_exp_run"
    shutil.copytree(runs["classifier"], trained)
    config = OmegaConf.load(trained / ".hydra" / "config.yaml")
    assert config._get_node("task_name")._value() == "${default_task_name:}"  # a default name: not carried
    config.task_name = "my_exp"
    OmegaConf.save(config, trained / ".hydra" / "config.yaml")
    overrides = OmegaConf.load(trained / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create(["task_name=my_exp", *overrides]), trained / ".hydra" / "overrides.yaml")
    run_dir = run_cli(tmp_path, "task=eval", f"ckpt_path={trained}")
    assert run_dir.parent.name == "eval_my_exp" and metrics(run_dir)["status"] == "completed"
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").task_name == "eval_my_exp"
    # a task_name on the command line wins; a prediction keeps its own name (predict_<model>)
    named = checkpoint_arguments(["task=eval", f"ckpt_path={trained}", "task_name=mine"])
    assert [a for a in named if a.startswith("task_name=")] == ["task_name=mine"]
    assert not any(a.startswith("task_name=") for a in checkpoint_arguments(["task=predict", f"ckpt_path={trained}"]))


def test_another_data_config_gets_the_networks_input_keys_it_has(tmp_path):
    run_dir = tmp_path / "flowers_run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").touch()  # not read here
    OmegaConf.save(OmegaConf.create(["data=flowers", "data.batch_size=8"]), run_dir / ".hydra" / "overrides.yaml")
    data = {"image_size": 32, "channels": 1, "normalize": "none", "value_range": [-1.0, 1.0], "batch_size": 8}
    OmegaConf.save(OmegaConf.create({"data": data}), run_dir / ".hydra" / "config.yaml")
    mnist = checkpoint_arguments(["task=eval", f"ckpt_path={run_dir}", "data=mnist"])
    assert mnist[2:5] == ["data.image_size=32", "data.channels=1", "data.normalize=none"]
    assert not any("value_range" in a or "batch_size" in a for a in mnist)  # MNIST's config has no value_range
    flowers = checkpoint_arguments(["task=eval", f"ckpt_path={run_dir}", "data=flowers", "data.channels=3"])
    assert "data.value_range=[-1.0, 1.0]" in flowers and "data.channels=1" not in flowers


@pytest.mark.parametrize("path", ["/r/3_lr=0.001,dropout=0.3/x.ckpt", "/r/it's here", "a\\'b\"c", "c:\\dir\\"])
def test_paths_become_override_values_that_hydra_reads_back(path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from apa_lightning.runs.checkpoint_lookup import hydra_value, unquoted

    value = hydra_value(path)
    assert OverridesParser.create().parse_override(f"ckpt_path={value}").value() == path
    assert unquoted(value) == path


def write_image_folder(folder: Path, images: torch.Tensor) -> list[Path]:
    """Each 28x28 grey digit in another colour mode with the same grey values (exact), then resized copies."""
    folder.mkdir()
    grey = [img[0].numpy() for img in images]
    Image.fromarray(grey[0], "L").save(folder / "a_grey.png")
    Image.fromarray(np.repeat(grey[1][..., None], 3, axis=2), "RGB").save(folder / "b_rgb.png")
    rgba = np.dstack([np.repeat(grey[2][..., None], 3, axis=2), np.full((28, 28), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "c_rgba.png")
    Image.fromarray(grey[3].astype(np.uint16) * 257).save(folder / "d_16bit.png")  # opened as I;16
    Image.fromarray(grey[4], "L").convert("P").save(folder / "e_palette.png")
    Image.fromarray(grey[5], "L").resize((56, 84)).save(folder / "f_tall.png")  # resized, centre cropped
    Image.fromarray(np.repeat(grey[6][..., None], 3, axis=2), "RGB").resize((64, 64)).save(folder / "g_big.jpg")
    return sorted(folder.iterdir())


def test_images_of_any_mode_become_the_networks_input(tmp_path):
    images = digit_test_images(7)
    files = write_image_folder(tmp_path / "photos", images)
    assert [Image.open(f).mode for f in files[:5]] == ["L", "RGB", "RGBA", "I;16", "P"]
    for file, expected in zip(files[:5], images[:5], strict=True):
        assert np.array_equal(read_image(file, 1, 28, 28), expected.numpy()), file.name
    assert read_image(files[5], 3, 32, 24).shape == (3, 32, 24) and read_image(files[6], 1, 7, 5).shape == (1, 7, 5)
    rgb = read_image(files[1], 3, 28, 28)
    assert np.array_equal(rgb[0], rgb[2]) and np.array_equal(rgb[0], images[1, 0].numpy())


def predict(root: Path, ckpt: Path, source: Path, *overrides: str) -> Path:
    return run_cli(root, "task=predict", f"ckpt_path={ckpt}", f"input={source}", *overrides)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_with_a_classifier_writes_sorted_top_k_probabilities(runs, tmp_path, capsys):
    images = digit_test_images(7)
    folder = tmp_path / "photos"
    files = write_image_folder(folder, images)
    capsys.readouterr()
    run_dir = predict(
        tmp_path,
        runs["classifier"],
        folder,
        "predict.top_k=4",
        "data.batch_size=2",
        "predict.grid_images=6",
        "predict.show=5",
    )  # 4 chunks
    rows = read_rows(run_dir / "predictions.csv")
    # the console's table: the first five, as predictions.csv has them
    out = capsys.readouterr().out
    assert "7 image(s) through" in out and "(the first 5):" in out
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split() == ["image", "class", "probability", "next"])
    for line, row in zip(lines[head + 1 : head + 6], rows[:5], strict=True):
        nexts = ", ".join(f"{row[f'class_{r}']} {float(row[f'probability_{r}']):.3f}" for r in (2, 3, 4))
        assert line.split(None, 3) == [Path(row["file"]).name, row["class"], f"{float(row['probability']):.3f}", nexts]
    assert not lines[head + 6].strip()  # five rows, then the files written
    # predictions.png: the first six as read (28x28 grey, drawn 3x), a row each named with its class and probability
    labels = [f"{Path(r['file']).name}: {r['class']} {float(r['probability']):.2f}" for r in rows[:6]]
    title = "as the network reads them: predicted class, probability"
    with Image.open(run_dir / "predictions.png") as grid:
        assert grid.size == grid_size(labels, columns=1, rows=6, cell=(84, 84), top_lines=1, title=title)
        pixels = np.asarray(grid)[..., 0]
    label_w = max(text_width(label) for label in labels) + 2 * MARGIN
    y, x = line_height() + GAP, label_w + GAP
    first = images[0, 0].numpy().repeat(3, 0).repeat(3, 1)
    assert np.array_equal(pixels[y : y + 84, x : x + 84], first)
    assert list(rows[0]) == ["file", "class", "probability"] + [
        f"{n}_{r}" for r in (2, 3, 4) for n in ("class", "probability")
    ]
    assert [r["file"] for r in rows] == [str(f) for f in files]
    model = ClassifierModule.load_from_checkpoint(metrics(runs["classifier"])["best_checkpoint"], weights_only=True)
    model.eval()
    with torch.no_grad():
        expected = model(images[:5].float() / 255).softmax(1)
    for row, probabilities in zip(rows, expected, strict=False):  # the five 28x28 files are the test images exactly
        assert row["class"] == str(probabilities.argmax().item())
        assert float(row["probability"]) == pytest.approx(probabilities.max().item(), abs=1e-6)
    for row in rows:
        top = [float(row["probability"])] + [float(row[f"probability_{r}"]) for r in (2, 3, 4)]
        assert top == sorted(top, reverse=True) and sum(top) <= 1 + 1e-5
        assert {row["class"], *(row[f"class_{r}"] for r in (2, 3, 4))} <= {str(d) for d in range(10)}


def test_predict_from_a_bare_checkpoint_reads_the_class_names_from_the_data_config(runs, tmp_path):
    # a checkpoint outside any run directory, written before the datamodule saved its state
    checkpoint = torch.load(metrics(runs["classifier"])["best_checkpoint"], weights_only=True)
    assert checkpoint.pop("DigitsDataModule")["classes"] == [str(d) for d in range(10)]
    torch.save(checkpoint, tmp_path / "bare.ckpt")
    image = tmp_path / "seven.png"
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(image)  # a colour image for a grey model
    bare = predict(tmp_path, tmp_path / "bare.ckpt", image, "data=digits")
    assert bare.parent.name == "predict"  # not named after the default model config
    first = read_rows(bare / "predictions.csv")
    again = read_rows(predict(tmp_path, runs["classifier"], image) / "predictions.csv")
    assert len(first) == 1 and first == again and len(first[0]) == 3 + 2 * 2  # top_k 3 by default


def test_predict_with_an_autoencoder_draws_input_beside_reconstruction(runs, tmp_path, capsys):
    images = digit_test_images(7)
    folder = tmp_path / "photos"
    write_image_folder(folder, images)
    capsys.readouterr()
    run_dir = predict(tmp_path, runs["ae"], folder, "predict.grid_images=6", "data.batch_size=3")  # 3 chunks
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split() == ["image", "mse", "psnr", "(dB)"])
    table = [line.split() for line in lines[head + 1 : head + 8]]
    assert [row[0] for row in table] == sorted(p.name for p in folder.iterdir())  # all 7: fewer than show=10
    assert sorted(p.name for p in run_dir.glob(".*")) == [".hydra"]  # the chunks' folder became reconstructions/
    # with the mode of the run's other folders, not mkdtemp's owner-only 0700
    assert (run_dir / "reconstructions").stat().st_mode & 0o777 == (run_dir / ".hydra").stat().st_mode & 0o777
    pictures = sorted((run_dir / "reconstructions").iterdir())
    assert [p.name for p in pictures] == [f.stem + ".png" for f in sorted(folder.iterdir())]
    model = AutoencoderModule.load_from_checkpoint(runs["ae"] / "checkpoints" / "last.ckpt", weights_only=True)
    model.eval()
    with torch.no_grad():
        expected = model(images[:1].float() / 255)[0, 0]
    with Image.open(pictures[0]) as pair:
        assert pair.size == (56, 28) and pair.mode == "RGB"  # input | reconstruction, at the network's size
        pixels = np.asarray(pair)[..., 0]
    assert np.array_equal(pixels[:, :28], images[0, 0].numpy())
    assert np.abs(pixels[:, 28:] - expected.mul(255).numpy()).max() <= 1
    mse = float(((images[0, 0].float() / 255 - expected) ** 2).mean())
    assert float(table[0][1]) == pytest.approx(mse, abs=1e-5)  # the console's error of the first image
    assert float(table[0][2]) == pytest.approx(10 * np.log10(1 / mse), abs=0.01)
    with Image.open(run_dir / "reconstructions.png") as grid:  # a row per image, drawn at least 64 pixels large
        assert grid.height > 6 * 64 and 2 * 64 < grid.width < grid.height
    assert not (run_dir / "samples.png").exists() and not (run_dir / "predictions.csv").exists()


@pytest.mark.parametrize("model", ["classifier", "ae"])
@pytest.mark.parametrize("inputs, grid_images", [(4, 3), (2, 3)])
def test_the_prediction_grid_shows_the_first_grid_images_inputs(runs, tmp_path, model, inputs, grid_images):
    images = digit_test_images(inputs)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy()).save(folder / f"{i}.png")
    run_dir = predict(tmp_path, runs[model], folder, f"predict.grid_images={grid_images}")
    shown = min(inputs, grid_images)
    if model == "classifier":
        rows = read_rows(run_dir / "predictions.csv")
        labels = [f"{Path(r['file']).name}: {r['class']} {float(r['probability']):.2f}" for r in rows[:shown]]
        title, columns, top_lines = "as the network reads them: predicted class, probability", 1, 1
        grid_file = run_dir / "predictions.png"
    else:
        labels, title, columns, top_lines = [f"{i}.png" for i in range(shown)], "input | reconstruction", 2, 2
        grid_file = run_dir / "reconstructions.png"
    with Image.open(grid_file) as grid:  # a row of 28x28 images drawn 3x per input shown, no more
        assert grid.size == grid_size(labels, columns, shown, (84, 84), top_lines, title)
        pixels = np.asarray(grid)[..., 0]
    x = max(text_width(label) for label in labels) + 2 * MARGIN + GAP
    for r in range(shown):  # input r in row r
        y = top_lines * line_height() + GAP + r * (84 + GAP)
        assert np.array_equal(pixels[y : y + 84, x : x + 84], images[r, 0].numpy().repeat(3, 0).repeat(3, 1))


def test_predict_with_a_vae_adds_samples(runs, tmp_path):
    image = tmp_path / "digit.png"
    Image.fromarray(digit_test_images(1)[0, 0].numpy()).save(image)
    run_dir = predict(tmp_path, runs["vae"], image, "predict.samples=4")
    with Image.open(run_dir / "samples.png") as samples, Image.open(run_dir / "reconstructions.png") as grid:
        assert 2 * 64 < samples.width < 3 * 64 and 2 * 64 < grid.width and 64 < grid.height < 3 * 64  # one row
    assert [p.name for p in (run_dir / "reconstructions").iterdir()] == ["digit.png"]


@pytest.mark.slow
def test_predict_through_the_command_line(runs, tmp_path):
    image = tmp_path / "digit.png"
    Image.fromarray(digit_test_images(1)[0, 0].numpy()).save(image)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "apa_lightning",
            "task=predict",
            f"ckpt_path={runs['classifier']}",
            f"input={image}",
            f"paths.root_dir={tmp_path}",
        ],
        cwd=tmp_path,
        env={**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").glob("predict_cnn_base/*")
    assert f"1 image(s) through {metrics(runs['classifier'])['best_checkpoint']}" in done.stdout
    assert read_rows(run_dir / "predictions.csv")[0]["file"] == str(image)


def test_predict_hands_yolo_weights_to_the_detector(make_cfg, tmp_path):
    from apa_lightning.errors import ApaError
    from apa_lightning.tasks.predict import predict as predict_task

    (tmp_path / "best.pt").write_bytes(b"not read: the detector's config is checked first")
    (tmp_path / "photo.png").write_bytes(b"")
    cfg = make_cfg("task=predict", "model=ae", f"ckpt_path={tmp_path / 'best.pt'}", f"input={tmp_path / 'photo.png'}")
    with pytest.raises(ApaError, match=r"best.pt is a YOLO detector's weights \(.pt\), which task=predict runs with"):
        predict_task(cfg)


def test_predict_normalises_with_the_saved_statistics_else_the_training_splits(runs, tmp_path):
    image = tmp_path / "digit.png"
    pixels = digit_test_images(1)
    Image.fromarray(pixels[0, 0].numpy()).save(image)
    checkpoint = torch.load(metrics(runs["classifier"])["best_checkpoint"], weights_only=True)
    checkpoint["datamodule_hyper_parameters"]["normalize"] = "dataset"
    checkpoint["DigitsDataModule"].update(mean=[0.25], std=[0.5])  # as a run with data.normalize=dataset saves them
    torch.save(checkpoint, tmp_path / "saved.ckpt")
    del checkpoint["DigitsDataModule"]
    torch.save(checkpoint, tmp_path / "older.ckpt")
    model = ClassifierModule.load_from_checkpoint(tmp_path / "saved.ckpt", weights_only=True).eval()
    training_split = DigitsDataModule(normalize="dataset")
    training_split.setup("fit")
    for name, (mean, std) in {"saved": (0.25, 0.5), "older": (training_split.mean[0], training_split.std[0])}.items():
        (row,) = read_rows(
            predict(tmp_path, tmp_path / f"{name}.ckpt", image, "data.normalize=dataset") / "predictions.csv"
        )
        with torch.no_grad():
            expected = model((pixels.float() / 255 - mean) / std).softmax(1)[0]
        assert float(row["probability"]) == pytest.approx(expected.max().item(), abs=1e-6), name


def test_an_unreadable_image_in_a_later_chunk_leaves_no_results(runs, tmp_path):
    folder = tmp_path / "photos"
    write_image_folder(folder, digit_test_images(7))
    (folder / "z_broken.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit):
        predict(tmp_path, runs["ae"], folder, "data.batch_size=2")
    (run_dir,) = (tmp_path / "outputs" / "runs" / "predict_ae").iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "metrics.json", "run.log"]  # no pictures
    assert "z_broken.png cannot be read as an image" in (run_dir / "run.log").read_text()
    record = metrics(run_dir)  # the failure recorded, as every failed run's
    assert record["status"] == "failed" and "z_broken.png cannot be read as an image" in record["error"]


def test_predict_reads_images_in_the_channels_the_dataset_stores(tmp_path, monkeypatch):
    from apa_lightning.tasks.predict import network_inputs

    colour = np.zeros((28, 28, 3), np.uint8)
    colour[..., 0] = 255  # pure red: grey 76 (Pillow's luminance), colour (255, 0, 0)
    Image.fromarray(colour).save(tmp_path / "red.png")
    files = [tmp_path / "red.png"] * 3
    served_rgb = DigitsDataModule(channels=3)  # grey digits repeated to 3 channels, as in training
    # a datamodule that does not declare the channels it stores gets what data.channels says: RGB kept
    with monkeypatch.context() as patch:
        patch.delattr(DigitsDataModule, "stored_channels")
        ((_, x),) = list(network_inputs(files, served_rgb, 8))
    assert x.shape == (3, 3, 28, 28) and torch.equal(x[:, 0], torch.ones(3, 28, 28)) and x[:, 1].max() == 0
    # the digits declare them (stored_channels = 1): read grey, which its on_after_batch_transfer repeats
    chunks = list(network_inputs(files, served_rgb, 2))
    assert [len(files) for files, _ in chunks] == [2, 1]
    x = torch.cat([x for _, x in chunks])
    assert (
        x.shape == (3, 3, 28, 28) and torch.equal(x[:, 0], x[:, 2]) and torch.allclose(x, torch.full_like(x, 76 / 255))
    )


def test_predict_reads_images_at_the_size_the_dataset_stores_then_resizes_as_in_training(make_cfg, tmp_path):
    from apa_lightning.tasks.predict import network_inputs
    from apa_lightning.tasks.train import instantiate_plain

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), np.uint8)).save(photo)
    # CIFAR-10 stores 32x32 images; this experiment trains on them upsampled to 224 (no dataset needed here)
    datamodule = instantiate_plain(make_cfg("experiment=cifar10_resnet18_pretrained").data)
    datamodule.mean, datamodule.std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]  # as predict takes them from the checkpoint
    ((_, x),) = list(network_inputs([photo], datamodule, 4))
    stored = torch.from_numpy(read_image(photo, 3, 32, 32)).unsqueeze(0)
    assert x.shape == (1, 3, 224, 224) and torch.equal(x, datamodule.float_images(stored))
    # not the sharp photo read straight at the network's size
    sharp = datamodule.float_images(torch.from_numpy(read_image(photo, 3, 224, 224)).unsqueeze(0))
    assert (x - sharp).abs().mean() > 0.5


@pytest.mark.parametrize("data", ["digits", "mnist", "fashion_mnist", "cifar10", "eurosat"])
def test_the_size_predict_reads_images_at_is_the_size_the_datamodule_stores(data, make_cfg, request):
    from apa_lightning.tasks.predict import stored_input_shape
    from apa_lightning.tasks.train import instantiate_plain

    overrides = ["data.image_size=48"]  # the network's size: not the stored one
    if data in ("mnist", "fashion_mnist"):
        overrides += [f"data.source_dir={request.getfixturevalue('idx_source')}", "data.val_size=10"]
    elif data == "cifar10":
        request.getfixturevalue("cifar10_root")
        overrides += ["data.val_size=10"]
    elif data == "eurosat":
        request.getfixturevalue("eurosat_root")
    datamodule = instantiate_plain(make_cfg(f"data={data}", *overrides).data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert stored_input_shape(datamodule) == tuple(datamodule.train_set.images.shape[1:])


def test_every_input_gets_a_picture_name_of_its_own():
    from apa_lightning.tasks.predict import picture_names

    files = [Path("x/a.png"), Path("x/a.jpg"), Path("x/a_png.bmp"), Path("y/b.png"), Path("z/b.png"), Path("c.png")]
    # a.png and a.jpg keep their suffix; a_png.bmp would take a.png's name, and the two b.png theirs
    assert picture_names(files) == ["a_png", "a_jpg", "a_png_2", "b_png", "b_png_2", "c"]


@pytest.mark.parametrize("flag", ["-m", "--multirun"])
def test_a_sweep_over_a_runs_checkpoint_stays_a_sweep(tmp_path, flag):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- model=cnn_base\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    single = ["task=eval", f"ckpt_path={run}", "data.batch_size=8"]
    checkpoint = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    assert checkpoint_arguments(single) == ["task=eval", checkpoint, "model=cnn_base", "hydra.mode=RUN", single[-1]]
    sweep = [flag, "task=eval", f"ckpt_path={run}", "data.batch_size=8,16"]
    assert checkpoint_arguments(sweep) == [flag, "task=eval", checkpoint, "model=cnn_base", sweep[-1]]


def test_predict_picks_the_device_of_trainer_accelerator(make_cfg, monkeypatch):
    from apa_lightning.errors import ApaError
    from apa_lightning.tasks.predict import predict_device

    heard = []
    lightning_info = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: heard.append(record.getMessage())
    lightning_info.addHandler(handler)
    try:
        assert predict_device(make_cfg("trainer.accelerator=cpu")) == torch.device("cpu")
        # a GPU run's device list, on a machine whose auto accelerator is the CPU
        assert predict_device(make_cfg("trainer.accelerator=auto", "trainer.devices=[1]")) == torch.device("cpu")
    finally:
        lightning_info.removeHandler(handler)
    assert not [m for m in heard if "available" in m]  # no "GPU available: ..." above the predictions table
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ApaError, match=r"trainer.accelerator=gpu \(trainer=gpu\) needs a GPU.*use trainer=cpu"):
        predict_device(make_cfg("trainer=gpu"))


def test_predict_runs_the_network_on_the_device_it_picked(runs, make_cfg, tmp_path, monkeypatch):
    from apa_lightning.tasks import predict as predict_module

    image = tmp_path / "digit.png"
    Image.fromarray(digit_test_images(1)[0, 0].numpy()).save(image)
    seen = []

    class Seen(Exception):
        pass

    def forward(self, x):
        seen.append((x.device.type, next(self.parameters()).device.type))
        raise Seen

    # "meta": a device other than the CPU that needs no hardware (tensors without data), as a GPU would be
    monkeypatch.setattr(predict_module, "predict_device", lambda cfg: torch.device("meta"))
    monkeypatch.setattr(ClassifierModule, "forward", forward)
    cfg = make_cfg("task=predict", f"ckpt_path={runs['classifier']}", f"input={image}")
    with pytest.raises(Seen):
        predict_module.predict(cfg)
    assert seen == [("meta", "meta")]  # the inputs converted there, the weights moved there
