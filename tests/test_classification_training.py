import csv
import json
from pathlib import Path

import pytest
import torch

from apa_lightning.data.digits import DigitsDataModule
from apa_lightning.tasks.train import instantiate_plain, train

from .conftest import bare_trainer, fill_value
from .test_configs import EXPERIMENTS

# VGG16 variant 1 holds 271 M parameters (77 s, 8 GB here); variant 5's affine and colour steps take 26 s on a CPU
HEAVY = {"cifar10_vgg16_variant1", "cifar10_vgg16_variant5"}
CIFAR10_EXPERIMENTS = [
    pytest.param(e, marks=pytest.mark.slow) if e in HEAVY else e for e in EXPERIMENTS if e.startswith("cifar10_")
]


def on_cifar10_fixture(root: Path) -> list[str]:
    """Overrides for a one-batch run on the tiny CIFAR-10 fixture (the experiments' 64 and 224 pixels are
    too slow on a CPU)."""
    return [
        "trainer=debug",
        "logger=csv",
        f"data.data_dir={root}",
        "data.download=false",
        "data.val_size=20",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.image_size=32",
    ]


@pytest.mark.slow
def test_cnn_v2_learns_digits_well_above_chance_and_writes_the_report(make_cfg):
    cfg = make_cfg(
        "model=cnn_v2",
        "logger=csv",
        "trainer.max_epochs=4",
        "data.batch_size=32",
        "optimized_metric=val/acc",
        "optimized_mode=max",
    )
    best_val_acc = train(cfg)
    out = Path(cfg.paths.output_dir)
    record = json.loads((out / "metrics.json").read_text())
    assert best_val_acc > 0.6 and record["test"]["test/acc"] > 0.6  # chance is 0.1
    assert {"test/mca", "test/macro_f1", "test/weighted_f1"} <= record["test"].keys()
    rows = list(csv.DictReader(open(out / "classification_report.csv")))
    assert [r["class"] for r in rows][:10] == [str(d) for d in range(10)]
    test_split = DigitsDataModule()
    test_split.setup()
    # support is counted per true class (rows of the confusion matrix), not per predicted class
    assert [int(float(r["support"])) for r in rows[:10]] == torch.bincount(test_split.test_set.labels).tolist()
    assert (out / "confusion_matrix.png").is_file() and "mCA" in (out / "classification_report.txt").read_text()
    assert not (out / "images").exists()  # image grids are for autoencoders
    epochs = [r for r in csv.DictReader(open(out / "csv" / "steps.csv")) if r.get("train/acc")]
    assert float(epochs[-1]["train/acc"]) > float(epochs[0]["train/acc"])
    assert "lr-Adam" in open(out / "csv" / "steps.csv").readline()  # learning rate logged every epoch


@pytest.mark.parametrize("experiment", CIFAR10_EXPERIMENTS)
def test_every_cifar10_experiment_runs_a_fast_dev_run(
    make_cfg, cifar10_root, fake_imagenet_weights, experiment, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(fake_imagenet_weights))
    cfg = make_cfg(f"experiment={experiment}", *on_cifar10_fixture(cifar10_root))
    train(cfg)
    out = Path(cfg.paths.output_dir)
    assert json.loads((out / "metrics.json").read_text())["status"] == "completed"
    assert (out / "classification_report.csv").is_file()


def test_frozen_pretrained_training_only_changes_the_head(make_cfg, cifar10_root, fake_imagenet_weights, monkeypatch):
    import copy

    from apa_lightning.tasks import train as run

    initial = {}

    def instantiate_and_remember(cfg):
        built = instantiate_plain(cfg)
        if hasattr(built, "net"):
            initial.update(copy.deepcopy(built.state_dict()))
        return built

    monkeypatch.setenv("TORCH_HOME", str(fake_imagenet_weights))
    monkeypatch.setattr(run, "instantiate_plain", instantiate_and_remember)
    # variant 2: frozen features; the classifier's new layers and its kept ImageNet 4096 -> 4096 layer all train
    # one real epoch of one batch (fast_dev_run, as Lightning does, writes no checkpoint)
    one_batch = [
        "trainer.fast_dev_run=false",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
    ]
    cfg = make_cfg("experiment=cifar10_vgg16_variant2", *on_cifar10_fixture(cifar10_root), *one_batch, "test=false")
    train(cfg)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    features = [k for k in state if k.startswith("net.features.")]
    head = [k for k in state if k.startswith("net.classifier.") and k.endswith("weight")]
    assert features and all(torch.equal(state[k], initial[k]) for k in features)  # frozen: untouched
    assert torch.all(state["net.features.0.weight"] == 0.001)  # and they are the pretrained (fake) weights
    assert torch.all(initial["net.classifier.6.weight"] == fill_value(28))  # the kept layer started from ImageNet's
    assert head and all(not torch.equal(state[k], initial[k]) for k in head)  # every head layer learned


def test_one_cycle_schedule_takes_its_length_from_the_trainer(make_cfg):
    # 2 epochs x 3 batches = 6 steps: the rate starts at max_lr / 25, peaks after ~2 steps and anneals
    cfg = make_cfg(
        "model=cnn_base",
        "model/scheduler=onecycle",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "test=false",
        "logger=csv",
    )
    train(cfg)
    rows = csv.DictReader(open(Path(cfg.paths.output_dir) / "csv" / "steps.csv"))
    lrs = [float(r["lr-Adam"]) for r in rows if r.get("lr-Adam")]
    assert lrs[0] == pytest.approx(0.01 / 25, rel=1e-6) and lrs[1] > 0.003  # a wrong length stays near 0.0004


def test_one_cycle_spans_exactly_the_trainers_optimizer_steps(make_cfg):
    import lightning as L

    model = instantiate_plain(make_cfg("model=cnn_base", "model/scheduler=onecycle").model)
    rates = []  # the rate of each optimizer step

    class RecordRate(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            rates.append(optimizer.param_groups[0]["lr"])

    # 2 epochs x 6 batches, a step every 2 batches: 6 optimizer steps
    trainer = bare_trainer(
        max_epochs=2, limit_train_batches=6, accumulate_grad_batches=2, limit_val_batches=0, callbacks=[RecordRate()]
    )
    trainer.fit(model, DigitsDataModule(batch_size=8))
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == trainer.estimated_stepping_batches == 6
    assert len(rates) == 6
    # max_lr 0.01 starts at / 25 (div_factor), peaks at step 0.3 * 6 - 1 = 0.8 and ends at / 1e4 of the start
    assert rates[0] == pytest.approx(0.01 / 25) and max(rates) == rates[1] == pytest.approx(0.01, rel=0.01)
    assert rates[-1] == pytest.approx(0.01 / 25 / 1e4)


@pytest.mark.parametrize("scheduler, lr_after_one_epoch", [("step", 0.0001), ("cosine", 0.0005), ("plateau", 0.001)])
def test_scheduler_presets_step_in_a_real_run(make_cfg, scheduler, lr_after_one_epoch):
    # two short epochs: each scheduler steps once at an epoch end (plateau reads val/loss there: its first
    # value is the best so far, so the rate stays)
    overrides = {"step": ["model.scheduler.step_size=1"], "plateau": ["model.scheduler.patience=0"], "cosine": []}
    cfg = make_cfg(
        "model=cnn_base",
        f"model/scheduler={scheduler}",
        *overrides[scheduler],
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "test=false",
        "logger=csv",
    )
    train(cfg)
    rows = csv.DictReader(open(Path(cfg.paths.output_dir) / "csv" / "steps.csv"))
    lrs = [float(r["lr-Adam"]) for r in rows if r.get("lr-Adam")]
    assert lrs == pytest.approx([0.001, lr_after_one_epoch])
