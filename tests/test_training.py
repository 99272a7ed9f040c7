import csv
import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from apa_lightning.callbacks.epoch_seed import TEST_EPOCH, epoch_seed
from apa_lightning.callbacks.finite_loss import FiniteLossCheck
from apa_lightning.errors import ApaError, user_error
from apa_lightning.models.autoencoder import AutoencoderModule
from apa_lightning.runs.figures import CARD_WIDTH, labelled_grid
from apa_lightning.tasks.train import train

from .conftest import bare_trainer
from .test_configs import EXPERIMENTS
from .test_resume import only_run_dir, run_cli

FAST = ["trainer=debug", "logger=csv"]


@pytest.mark.parametrize("model", ["ae", "dae", "vae"])
def test_fast_dev_run_of_each_model_writes_metrics(make_cfg, model):
    cfg = make_cfg(f"model={model}", *FAST)
    train(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert {"test/loss", "test/mse", "test/psnr", "test/ssim"} <= record["test"].keys()
    if model == "dae":
        assert {"test/noise0.1/psnr", "test/noise0.1/input_psnr", "test/noise0.2/ssim"} <= record["test"].keys()
    if model == "vae":
        assert {"test/kl", "test/elbo", "test/recon"} <= record["test"].keys()


@pytest.mark.slow
def test_short_training_on_digits_lowers_validation_loss_and_tests_best_checkpoint(make_cfg):
    cfg = make_cfg("logger=csv", "trainer.max_epochs=3", "data.batch_size=32", "model.optimizer.lr=0.005")
    best = train(cfg)
    out = Path(cfg.paths.output_dir)
    rows = [r for r in csv.DictReader(open(out / "csv" / "steps.csv")) if r.get("val/loss")]
    losses = [float(r["val/loss"]) for r in rows]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0]
    record = json.loads((out / "metrics.json").read_text())
    assert best == pytest.approx(min(losses), rel=1e-5) == pytest.approx(record["best_score"], rel=1e-5)
    assert Path(record["best_checkpoint"]).is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert record["test"]["test/psnr"] > 10
    # the final reconstructions are saved as a picture: inputs over reconstructions, 8 per row, drawn 84 pixels
    # (3 x 28) under their class names
    grid = Image.open(out / "images" / "reconstructions.png")
    rows = [(label, torch.zeros(8, 1, 28, 28)) for label in ("input", "reconstruction")]
    layout = labelled_grid(rows, column_labels="01234567", readable_at=CARD_WIDTH)  # digits: names equally wide
    assert grid.size == (layout.shape[2], layout.shape[1])

    # the checkpoint holds only plain values and restores the module on its own
    checkpoint = torch.load(record["best_checkpoint"], weights_only=True)
    assert checkpoint["hyper_parameters"]["net"]["_target_"].endswith("ConvAutoencoder")
    restored = AutoencoderModule.load_from_checkpoint(record["best_checkpoint"], weights_only=True)
    assert torch.equal(restored.net.encoder[0][0].weight, checkpoint["state_dict"]["net.encoder.0.0.weight"])


def test_vae_with_2d_latent_space_saves_samples_interpolation_and_scatter(make_cfg):
    cfg = make_cfg("model=vae", "model.net.latent_dim=2", *FAST)
    train(cfg)
    images = Path(cfg.paths.output_dir) / "images"
    assert sorted(p.name for p in images.iterdir()) == [
        "interpolation.png",
        "latent_space.png",
        "reconstructions.png",
        "samples.png",
    ]
    title = "64 samples decoded from z ~ N(0, I)"  # wrapped to the width of 8 images drawn 84 pixels (3 x 28)
    layout = labelled_grid([("", torch.zeros(8, 1, 28, 28))] * 8, title=title, readable_at=CARD_WIDTH)
    assert Image.open(images / "samples.png").size == (layout.shape[2], layout.shape[1])
    # one row "<class> → <class>" (digits: every name as wide) under a title
    title = "decoded along the line between the codes of the first two images"
    layout = labelled_grid([("0 → 0", torch.zeros(10, 1, 28, 28))], title=title, readable_at=CARD_WIDTH)
    assert Image.open(images / "interpolation.png").size == (layout.shape[2], layout.shape[1])


def test_seed_zero_is_honoured(make_cfg):
    torch.manual_seed(123)
    train(make_cfg("seed=0", *FAST))
    assert os.environ["PL_GLOBAL_SEED"] == "0"
    assert torch.initial_seed() == epoch_seed(0, TEST_EPOCH)  # the test's draws: seeded from 0, not left random


def test_missing_checkpoint_is_a_clear_error(make_cfg, tmp_path):
    with pytest.raises(ApaError, match="ckpt_path=.*is not a file"):
        train(make_cfg("ckpt_path=" + str(tmp_path / "nope.ckpt"), *FAST))


def test_a_crash_in_training_keeps_checkpoints_and_records_the_error(make_cfg, monkeypatch):
    original = AutoencoderModule.validation_step

    def fail_in_second_epoch(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise RuntimeError("disk on fire")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(AutoencoderModule, "validation_step", fail_in_second_epoch)
    cfg = make_cfg("logger=csv", "trainer.max_epochs=3", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(cfg)
    out = Path(cfg.paths.output_dir)
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "failed" and "disk on fire" in record["error"]
    assert Path(record["best_checkpoint"]).name == "epoch001.ckpt"
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


def test_bad_config_values_are_reported_as_user_errors(make_cfg):
    with pytest.raises(Exception) as err:
        train(make_cfg("model=dae", "model.noise.kind=speckle", *FAST))
    assert "model.noise.kind must be one of gaussian, salt_and_pepper, masking" in user_error(err.value)
    with pytest.raises(Exception) as err:
        train(make_cfg("data.batch_size=0", *FAST))
    assert "batch_size must be at least 1" in user_error(err.value)
    with pytest.raises(Exception) as err:
        train(make_cfg("+model.optimizer.momentum_typo=0.9", *FAST))
    assert "momentum_typo" in user_error(err.value)


@pytest.mark.parametrize(
    "setting, reason",
    [  # check_val_every_n_epoch: as font_ae's 10 with fewer epochs
        (
            "trainer.check_val_every_n_epoch=3",
            "no epoch was validated (trainer.check_val_every_n_epoch=3, trainer.max_epochs=1, trainer.limit_val",
        ),
        ("callbacks.model_checkpoint.save_top_k=0", "the checkpoint callback saved none (callbacks.model_checkpoint."),
    ],
)
def test_a_run_without_a_best_checkpoint_says_why_it_tests_the_final_weights(make_cfg, caplog, setting, reason):
    cfg = make_cfg(
        "logger=csv",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        setting,
    )
    with caplog.at_level("INFO", logger="apa_lightning.tasks.train"):
        train(cfg)
    assert f"No best checkpoint: {reason}" in caplog.text
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert record["status"] == "completed" and "test/loss" in record["test"]


def test_a_run_without_logger_trains_and_keeps_its_own_records(make_cfg):
    cfg = make_cfg("~logger", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")
    train(cfg)  # Lightning refuses a LearningRateMonitor without a logger: it is left out
    out = Path(cfg.paths.output_dir)
    (row,) = list(csv.DictReader(open(out / "metrics.csv")))
    assert float(row["lr"]) == cfg.model.optimizer.lr  # the learning rate is still recorded
    assert json.loads((out / "metrics.json").read_text())["status"] == "completed"
    assert not list(out.glob("**/events.out.tfevents.*"))


def test_checkpoint_names_count_epochs_from_one_and_its_state_key_is_lightnings(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from apa_lightning.callbacks.checkpoints import RunCheckpoint

    settings = {"dirpath": tmp_path, "filename": "epoch{epoch:03d}", "auto_insert_metric_name": False}
    ours, lightnings = RunCheckpoint(monitor="val/loss", **settings), ModelCheckpoint(monitor="val/loss", **settings)
    # after the fifth epoch (current_epoch 4): the number metrics.csv and the console lines show
    assert Path(ours.format_checkpoint_name({"epoch": torch.tensor(4)})).name == "epoch005.ckpt"
    assert Path(lightnings.format_checkpoint_name({"epoch": torch.tensor(4)})).name == "epoch004.ckpt"
    # made once, the key Lightning's own property gives (checkpoint files store the callback's state under it)
    assert ours.state_key == ModelCheckpoint.state_key.fget(ours) == ours.state_key
    assert ours.state_key.startswith("RunCheckpoint{'monitor': 'val/loss'")


class DivergingModule(L.LightningModule):
    """One weight fitted to ones; from epoch ``diverges_at`` on, its loss is multiplied by ``factor`` (nan, inf)."""

    def __init__(self, diverges_at: int, factor: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.diverges_at, self.factor = diverges_at, factor

    def training_step(self, batch, batch_idx):
        loss = (self.weight - batch[0]).pow(2).mean()
        if self.current_epoch >= self.diverges_at:
            loss = loss * self.factor
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(4)), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("factor", [float("nan"), float("inf")])
def test_finite_loss_check_stops_at_the_epoch_whose_loss_is_not_finite(factor):
    trainer = bare_trainer(max_epochs=5, callbacks=[FiniteLossCheck()])
    expected = f"train/loss is {factor} after epoch 1: training diverged. Lower model.optimizer.lr"
    with pytest.raises(ApaError, match=expected):
        trainer.fit(DivergingModule(diverges_at=1, factor=factor))
    assert trainer.current_epoch == 1  # epochs 2 to 4 never ran


def test_finite_loss_check_refuses_a_monitor_the_model_does_not_log():
    trainer = bare_trainer(max_epochs=2, callbacks=[FiniteLossCheck(monitor="train/los")])
    with pytest.raises(
        ApaError, match=r"monitor=train/los, which the model does not log \(its training metrics: train/loss\)"
    ):
        trainer.fit(DivergingModule(diverges_at=5, factor=1.0))


def test_a_diverged_run_ends_with_its_error_and_is_recorded_as_failed(monkeypatch, capsys, tmp_path):
    original = AutoencoderModule.forward

    def nan_from_second_epoch(self, x):
        out = original(self, x)
        return out * float("nan") if self.training and self.current_epoch == 1 else out

    monkeypatch.setattr(AutoencoderModule, "forward", nan_from_second_epoch)
    overrides = ["model=ae", "trainer.max_epochs=3", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *overrides, "logger=csv")
    assert code == 1 and stderr.count("error: ") == 1 and "Traceback" not in stderr
    assert "error: train/loss is nan after epoch 1: training diverged." in stderr
    run_dir = only_run_dir(tmp_path)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("train/loss is nan after epoch 1")
    assert record["epochs"] == 1  # the diverged epoch is not kept: last.ckpt resumes from the healthy one
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


def test_early_stopping_on_a_metric_that_is_not_logged_is_one_error_naming_its_key(monkeypatch, capsys, tmp_path):
    overrides = ["callbacks=early_stopping", "callbacks.early_stopping.monitor=val/los", "trainer.max_epochs=1"]
    fast = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "logger=csv"]
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *overrides, *fast)
    assert code == 1 and stderr.count("error: ") == 1 and "Traceback" not in stderr
    assert "metric `val/los` which is not available" in stderr and "`val/loss`" in stderr
    assert "Set callbacks.early_stopping.monitor (default: optimized_metric) to one of them." in stderr
    assert json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("experiment", [None, *(e for e in EXPERIMENTS if not e.startswith("kitti_"))])
def test_every_training_config_checks_that_the_loss_stays_finite(make_cfg, experiment):
    cfg = make_cfg(*([f"experiment={experiment}"] if experiment else []))
    checks = [c for c in cfg.callbacks.values() if c and c._target_.endswith(".FiniteLossCheck")]
    assert [c.monitor for c in checks] == ["train/loss"]
