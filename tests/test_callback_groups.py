"""Callbacks by model family: each experiment composes exactly the callbacks it uses (callbacks/default.yaml and
the family its model or data config chooses in callbacks/family/), and a callback on the wrong family fails at
setup with the key to switch it off."""

from __future__ import annotations

from pathlib import Path

import pytest

from apa_lightning.errors import ApaError
from apa_lightning.tasks.train import train

# callbacks/default.yaml: every training run's
BASE = {
    "model_checkpoint",
    "epoch_seed",
    "finite_loss_check",
    "progress_bar",
    "throughput",
    "lr_monitor",
    "epoch_metrics",
    "model_summary",
}


@pytest.mark.parametrize(
    "overrides, family",
    [
        ([], {"image_grids"}),  # model=ae data=digits
        (["experiment=mnist_ae"], {"image_grids"}),
        (["experiment=fashion_mnist_dae"], {"image_grids"}),
        (["experiment=mnist_vae"], {"image_grids"}),
        (["experiment=flowers_ae"], {"image_grids"}),
        (["experiment=notmnist_code2"], {"image_grids"}),
        (["experiment=cifar10_cnn_base"], {"classification_report"}),
        (["experiment=eurosat_fusion"], {"classification_report"}),
        (["experiment=font_ae"], {"font_pictures"}),
        (["experiment=font_dae"], {"font_pictures"}),
        (["data=font", "model=mlp_ae"], {"font_pictures"}),  # the data's choice wins over the model's
        (["model=cnn_base", "callbacks=early_stopping"], {"classification_report", "early_stopping"}),
        (["model=vae", "callbacks/family=font"], {"font_pictures"}),  # the command line wins over both
    ],
)
def test_each_family_composes_exactly_the_callbacks_it_uses(make_cfg, overrides, family):
    assert set(make_cfg(*overrides).callbacks) == BASE | family


def test_a_detection_run_composes_no_callbacks(make_cfg):
    # task=detect trains with ultralytics' own loop, which runs none of them
    assert dict(make_cfg("experiment=kitti_yolo_scratch").callbacks) == {}


def test_a_callback_switched_off_stays_listed_as_null(make_cfg):
    cfg = make_cfg("model=cnn_base", "callbacks.progress_bar=null")
    assert cfg.callbacks.progress_bar is None and set(cfg.callbacks) == BASE | {"classification_report"}


FAST = ["logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model=cnn_base", "callbacks/family=reconstruction"],
            r"callbacks.image_grids draws an autoencoder's reconstructions, but the model is ClassifierModule;"
            r".* callbacks.image_grids=null",
        ),
        (
            ["model=ae", "callbacks/family=classification"],
            r"callbacks.classification_report reports a classifier's test, but the model is AutoencoderModule;"
            r".* callbacks.classification_report=null",
        ),
        (
            ["model=mlp_ae", "callbacks/family=font"],
            r"callbacks.font_pictures .* the data is DigitsDataModule .* callbacks.font_pictures=null",
        ),
    ],
)
def test_a_callback_on_the_wrong_family_fails_at_setup_before_training(make_cfg, overrides, message):
    cfg = make_cfg(*overrides, *FAST)
    with pytest.raises(ApaError, match=message):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.csv").exists()  # no epoch ran
