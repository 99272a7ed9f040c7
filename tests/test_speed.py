"""Training speed: throughput in every run, the fast-path switches (channels_last, compile, precision), a resume
that changes only them, the once-per-epoch training logs, the throttled progress bar, and the loop benchmark."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.metrics import accuracy_score, recall_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from apa_lightning.callbacks.progress_bar import ThrottledProgressBar
from apa_lightning.cli.config_checks import check_config
from apa_lightning.data.digits import DigitsDataModule
from apa_lightning.data.font import FontDataModule, PassBatches
from apa_lightning.data.in_memory import InMemoryImageDataModule
from apa_lightning.errors import ApaError
from apa_lightning.models.classifier import ClassifierModule
from apa_lightning.tasks.precision import resolved_precision
from apa_lightning.tasks.train import instantiate_plain, train

SHORT = [
    "model=cnn_base",
    "trainer.accelerator=cpu",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


@pytest.fixture
def restore_matmul_precision():
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


def test_every_run_logs_images_per_second_and_epoch_time(make_cfg):
    cfg = make_cfg(*SHORT, "trainer.max_epochs=2", "logger=[tensorboard,csv]")
    train(cfg)
    out = Path(cfg.paths.output_dir)
    record = json.loads((out / "metrics.json").read_text())
    rows = [r for r in csv.DictReader(open(out / "csv" / "steps.csv")) if r.get("perf/images_per_s")]
    assert len(rows) == 2  # one per epoch
    rates = [float(r["perf/images_per_s"]) for r in rows]
    epoch_times = [float(r["perf/epoch_time_s"]) for r in rows]
    # 5 batches of 16 digits per epoch: metrics.json's rate is all images over all training seconds
    train_seconds = [5 * 16 / rate for rate in rates]
    assert record["images_per_s"] == pytest.approx(2 * 5 * 16 / sum(train_seconds), abs=0.06)
    assert record["epoch_time_s"] == pytest.approx(sum(epoch_times) / 2, abs=0.001)
    assert all(epoch > train for epoch, train in zip(epoch_times, train_seconds, strict=True))  # + validation
    assert all(0 < t < record["wall_time_s"] for t in epoch_times)
    events = EventAccumulator(str(next(out.rglob("events.out.tfevents*")).parent)).Reload()
    assert [e.value for e in events.Scalars("perf/images_per_s")] == pytest.approx(rates, rel=1e-4)
    assert len(events.Scalars("perf/epoch_time_s")) == 2
    assert "compile_time_s" not in record  # only with model.compile=true


class SlowAfterValidation(L.Callback):
    """Work after a validation that is not training: image grids, checkpoint saving."""

    seconds = 0.5

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            time.sleep(self.seconds)


def test_work_after_a_validation_inside_the_epoch_is_not_training_time(make_cfg):
    # 4 batches of 16 with a validation after the second: the sleep after it must not count as training
    cfg = make_cfg(
        *SHORT,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "+trainer.val_check_interval=2",
        f"+callbacks.slow._target_={__name__}.SlowAfterValidation",
    )
    train(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    train_seconds = 4 * 16 / record["images_per_s"]
    # the epoch holds both sleeps (mid-epoch and at its end), its training time neither
    assert record["epoch_time_s"] - train_seconds >= 2 * SlowAfterValidation.seconds - 0.01


def test_the_step_in_which_torch_compiles_is_not_training_speed():
    from types import SimpleNamespace

    from apa_lightning.callbacks.throughput import Throughput

    now = iter([0.0, 10.0, 10.0, 12.5, 12.5])  # epoch start, the compiling step's end (2 reads), epoch end (2)
    throughput = Throughput()
    throughput.clock = lambda: next(now)
    trainer = SimpleNamespace(world_size=1, loggers=[], datamodule=DigitsDataModule())
    module = SimpleNamespace(device=torch.device("cpu"), compiling=True)
    batch = (torch.zeros(16, 1, 8, 8), torch.zeros(16))
    throughput.on_train_epoch_start(trainer, module)
    throughput.on_train_batch_end(trainer, module, None, batch, 0)  # 10 s of compiling: left out
    module.compiling = False
    throughput.on_train_batch_end(trainer, module, None, batch, 1)
    throughput.on_train_batch_end(trainer, module, None, batch, 2)
    throughput.on_train_epoch_end(trainer, module)  # reads 12.5 twice: the segment's end and the epoch's
    assert (throughput.images, throughput.train_seconds) == (32, 2.5)  # 10.0 -> 12.5, two batches
    assert throughput.summary() == {"images_per_s": 32 / 2.5, "epoch_time_s": 12.5}


def test_the_datamodule_counts_the_images_of_its_batches_plain_and_in_passes():
    assert DigitsDataModule().batch_images((torch.zeros(16, 1, 28, 28), torch.zeros(16))) == 16
    font = FontDataModule(image_size=7)
    passes = PassBatches(torch.zeros(100, 32, 1, 7, 5), torch.zeros(100, 32), batch_size=5)  # passes x glyphs
    assert font.batch_images(passes) == 3200
    assert font.batch_images((torch.zeros(32, 1, 7, 5), torch.zeros(32))) == 32  # validation: the glyphs once


def test_throughput_on_a_datamodule_that_cannot_count_its_images_fails_at_setup():
    from types import SimpleNamespace

    from apa_lightning.callbacks.throughput import Throughput

    trainer = SimpleNamespace(datamodule=L.LightningDataModule())
    with pytest.raises(ApaError, match=r"callbacks.throughput .* LightningDataModule .*=null"):
        Throughput().setup(trainer, None, "fit")


def test_training_logs_are_epoch_means_weighted_by_batch_size(make_cfg):
    # 1,257 training digits in batches of 16: the last batch has 9 images, so a plain mean of the batch losses
    # differs from the epoch mean that self.log(on_epoch=True) at every step gave and log_training gives
    cfg = make_cfg("model=cnn_base", "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_val_batches=1")
    losses, sizes, predicted, labels = [], [], [], []

    class Recording(ClassifierModule):
        def forward(self, x):
            self.logits = super().forward(x)
            return self.logits

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            losses.append(loss.item())
            sizes.append(len(batch[1]))
            predicted.extend(self.logits.argmax(1).tolist())
            labels.extend(batch[1].tolist())
            return loss

    import lightning as L

    datamodule = instantiate_plain(cfg.data)
    model = Recording(**{k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "_target_"})
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_val_batches=1, logger=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=datamodule)
    assert sizes[-1] == 9 and len(sizes) == 79
    expected = sum(loss * n for loss, n in zip(losses, sizes, strict=True)) / sum(sizes)
    assert trainer.callback_metrics["train/loss"].item() == pytest.approx(expected, rel=1e-5)
    # accuracy and mCA of every training prediction of the epoch (the metrics are updated once, at its end)
    metrics = trainer.callback_metrics
    assert metrics["train/acc"].item() == pytest.approx(accuracy_score(labels, predicted), abs=1e-6)
    assert metrics["train/mca"].item() == pytest.approx(recall_score(labels, predicted, average="macro"), abs=1e-6)
    assert set(trainer.callback_metrics) >= {"train/loss", "train/acc", "train/mca", "val/loss", "val/acc"}


def test_log_training_refuses_metrics_without_their_inputs(make_cfg):
    module = instantiate_plain(make_cfg("model=cnn_base").model)
    loss = torch.tensor(0.5)
    with pytest.raises(TypeError, match="metrics need this step's metric_inputs"):
        module.log_training({"train/loss": loss}, 16, module.train_metrics)
    with pytest.raises(TypeError):  # prog_bar and metric_inputs only by name
        module.log_training({"train/loss": loss}, 16, module.train_metrics, ("train/loss",))


class RecordingClassifier(ClassifierModule):
    """Keeps every training step's loss and batch size, per epoch."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps: dict[int, list[tuple[float, int]]] = {}

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.steps.setdefault(self.current_epoch, []).append((loss.item(), len(batch[1])))
        return loss


class EpochEndValues(L.Callback):
    """What a callback's on_train_epoch_end (metrics.csv's, the finite-loss check's) sees of the training values,
    optionally stopping the run after ``stop_after`` batches of the first epoch."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.seen, self.stop_after = [], stop_after

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.stop_after is not None and trainer.current_epoch == 1 and batch_idx + 1 == self.stop_after:
            trainer.should_stop = True  # in the 2nd epoch: callback_metrics still hold the 1st epoch's values

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen.append(trainer.callback_metrics.get("train/loss"))


def weighted_mean(steps):
    return sum(loss * n for loss, n in steps) / sum(n for _, n in steps)


@pytest.mark.parametrize(
    "limits, stop_after, steps_per_epoch",
    [
        ({"max_steps": 7}, None, [5, 2]),  # the 2nd epoch is cut short by max_steps at its 2nd step
        ({"max_steps": 3}, None, [3]),
        ({}, 2, [5, 2]),  # a callback's should_stop after 2 batches of the 2nd epoch
        # gradients of 2 batches per step: the 2nd step, the last, is taken at the 4th batch, not the 3rd
        ({"max_steps": 2, "accumulate_grad_batches": 2}, None, [4]),
        ({"max_steps": 4, "accumulate_grad_batches": 2}, None, [5, 2]),  # the 5th batch steps: the epoch's last
    ],
)
def test_an_epoch_cut_short_logs_the_means_of_its_own_steps(make_cfg, tmp_path, limits, stop_after, steps_per_epoch):
    cfg = make_cfg("model=cnn_base")
    model = RecordingClassifier(**{k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "_target_"})
    values = EpochEndValues(stop_after)
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="csv")
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=5,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[values],
        **limits,
    )
    trainer.fit(model, datamodule=instantiate_plain(cfg.data))
    assert [len(model.steps[epoch]) for epoch in sorted(model.steps)] == steps_per_epoch
    expected = [weighted_mean(model.steps[epoch]) for epoch in sorted(model.steps)]
    # every callback's on_train_epoch_end (metrics.csv's too) sees this epoch's means, not the previous epoch's
    assert [v.item() for v in values.seen] == pytest.approx(expected, rel=1e-5)
    assert trainer.callback_metrics["train/loss"].item() == pytest.approx(expected[-1], rel=1e-5)
    logger.save()
    rows = [r for r in csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")) if r.get("train/loss")]
    assert [float(r["train/loss"]) for r in rows] == pytest.approx(expected, rel=1e-5)
    assert all(r.get("train/acc") for r in rows)


def test_channels_last_puts_the_weights_and_the_inputs_in_channels_last(make_cfg):
    cfg = make_cfg("model=cnn_v2", "data.channels=3", "model.channels_last=true")
    module = instantiate_plain(cfg.model)
    plain = instantiate_plain(make_cfg("model=cnn_v2", "data.channels=3").model)
    module.configure_model()
    plain.configure_model()
    conv = module.net.features[0][0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()  # 3 input channels: the two layouts differ
    assert plain.net.features[0][0].weight.is_contiguous()
    seen = []
    conv.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x = torch.rand(2, 3, 28, 28)
    assert x.is_contiguous()
    logits = module(x)
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    # the same weights give the same logits in either layout; the state_dict keys do not change
    plain.load_state_dict(module.state_dict())
    torch.testing.assert_close(plain.eval()(x), module.eval()(x))
    assert logits.shape == (2, 10)
    assert "channels_last" not in module.hparams and "compile" not in module.hparams


def test_a_resume_that_changes_only_the_fast_paths_is_accepted(make_cfg, restore_matmul_precision):
    first = make_cfg(*SHORT, "trainer.max_epochs=1", "logger=csv")
    train(first)
    out = Path(first.paths.output_dir)
    changed = [
        "model.channels_last=true",
        "trainer.benchmark=true",
        "matmul_precision=high",
        f"paths.output_dir={out}",
        f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
    ]
    train(make_cfg(*SHORT, "trainer.max_epochs=2", "logger=csv", *changed))
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 2
    assert torch.get_float32_matmul_precision() == "high"
    # a change of what the model is stays refused
    with pytest.raises(ApaError, match="model.label_smoothing was 0.0, but it is 0.1"):
        train(make_cfg(*SHORT, "trainer.max_epochs=3", "model.label_smoothing=0.1", *changed))


@pytest.mark.slow
def test_compile_trains_reports_its_time_and_keeps_checkpoint_keys(make_cfg, caplog):
    cfg = make_cfg(
        *SHORT, "trainer.max_epochs=1", "logger=csv", "model.compile=true", "model.channels_last=true", "test=false"
    )
    with caplog.at_level("INFO", logger="apa_lightning.models.base"):
        train(cfg)
    out = Path(cfg.paths.output_dir)
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "completed" and record["compile_time_s"] > 0
    assert "model.compile=true: " in caplog.text and "s from compiling the network through the first" in caplog.text
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert set(state) == set(instantiate_plain(cfg.model).state_dict())  # no _orig_mod prefixes
    assert ClassifierModule.load_from_checkpoint(out / "checkpoints" / "last.ckpt").compile_net is False


def test_mixed_precision_is_chosen_at_run_time(monkeypatch, caplog):
    assert resolved_precision({"precision": "32-true"}) == {}
    assert resolved_precision({"precision": "mixed"}) == {"precision": "bf16-mixed"}  # no CUDA here: CPU autocast
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    with caplog.at_level("INFO", logger="apa_lightning.tasks.precision"):
        assert resolved_precision({"precision": "mixed"}) == {"precision": "16-mixed"}
    assert "trainer.precision=mixed: training with 16-mixed (Tesla T4)" in caplog.text
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolved_precision({"precision": "mixed"}) == {"precision": "bf16-mixed"}


def test_trainer_gpu_without_a_gpu_is_refused_by_name(make_cfg, monkeypatch):
    from apa_lightning.tasks.train import build_run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ApaError, match=r"trainer.accelerator=gpu \(trainer=gpu\) needs a GPU.*use trainer=cpu"):
        build_run(make_cfg("trainer=gpu"))


def test_fast_path_values_are_checked(make_cfg):
    assert make_cfg("trainer=gpu").trainer.precision == "mixed"
    assert make_cfg().trainer.benchmark is False and make_cfg().matmul_precision == "highest"
    with pytest.raises(ApaError, match=r"matmul_precision=tf32 is not allowed: .* highest, high \(TF32\)"):
        check_config(make_cfg("matmul_precision=tf32"))


def test_progress_bar_redraws_at_most_every_interval_and_at_the_last_batch(monkeypatch):
    bar = ThrottledProgressBar(min_interval_s=1.0)
    now = iter([10.0, 10.5, 11.2, 11.3, 11.4])
    monkeypatch.setattr("apa_lightning.callbacks.progress_bar.time.perf_counter", lambda: next(now))
    assert [bar._due(i, total=5) for i in range(5)] == [True, False, True, False, True]


def test_progress_bar_counts_epochs_from_one_like_the_epoch_lines(make_cfg, capsys):
    train(make_cfg(*SHORT, "trainer.max_epochs=2", "test=false"))
    out = capsys.readouterr().out  # off a terminal, rich prints the bar once, as it ended
    assert "Epoch 2/2 " in out and "Epoch 1/1 " not in out  # Lightning's bar: "Epoch 1/1" for the second of two


def load_benchmark(monkeypatch):
    path = Path(__file__).parents[1] / "benchmarks" / "loop_overhead.py"
    spec = importlib.util.spec_from_file_location("loop_overhead", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "loop_overhead", module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_loop_benchmark_runs_a_tiny_round_of_both_loops(tmp_path, capsys, monkeypatch):
    bench = load_benchmark(monkeypatch)
    case = bench.cases()["digits_cnn_base"]
    case.batches = 2
    ratio = bench.run_case("digits_cnn_base", case, tmp_path, rounds=1, extra=[])
    out = capsys.readouterr().out
    # 3 epochs of 2 batches of 16 on both sides
    assert case.epochs == 3 and "digits_cnn_base round 0   plain: 96 images in" in out
    assert "digits_cnn_base round 0 trainer: 96 images in" in out
    assert f"ours / plain = {ratio:.2f}x" not in out and f": {ratio:.2f}x" in out and ratio > 0
    bench.main(["--case", "cifar10_resnet18_gpu", "--root", str(tmp_path), "--batches", "2", "--rounds", "1"])
    if not torch.cuda.is_available():
        assert "cifar10_resnet18_gpu: skipped, no CUDA GPU" in capsys.readouterr().out


def test_loop_benchmark_plain_round_applies_the_trainer_sides_speed_settings(
    tmp_path, monkeypatch, restore_matmul_precision
):
    bench = load_benchmark(monkeypatch)
    case = bench.cases()["digits_cnn_base"]
    case.batches, case.epochs = 2, 1
    nets, inputs, compiled, augmented = [], [], [], []

    def instantiate(config, **kwargs):
        made = real_instantiate(config, **kwargs)
        if isinstance(made, torch.nn.Module):
            made.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
            nets.append(made)
        return made

    def float_images(self, images, augment=False):
        augmented.append(augment)
        return real_float_images(self, images, augment)

    real_instantiate, real_float_images = bench.instantiate, InMemoryImageDataModule.float_images
    monkeypatch.setattr(bench, "instantiate", instantiate)
    monkeypatch.setattr(InMemoryImageDataModule, "float_images", float_images)
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *args, **kwargs: compiled.append(self))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    overrides = [
        "model.channels_last=true",
        "model.compile=true",
        "matmul_precision=high",
        "trainer.benchmark=true",
        "data/augmentation=standard",
    ]
    images, seconds = bench.plain_round(case, tmp_path, overrides, seed=0)
    assert images == 32 and seconds > 0
    (net,) = nets
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert len(inputs) == 2 and all(x.is_contiguous(memory_format=torch.channels_last) for x in inputs)
    assert compiled == [net] and augmented == [True, True]
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.benchmark


def test_sweep_summary_shows_images_per_second_next_to_wall_time():
    from apa_lightning.tasks.sweep_summary import summarize

    run = {"job": "0", "overrides": "lr=0.1", "status": "completed", "best_score": 0.5, "test": {}, "epochs": 2}
    table, columns = summarize([{**run, "wall_time_s": 3.0, "images_per_s": 1234.5}, {**run, "job": "1"}])
    assert columns[columns.index("wall_time_s") + 1] == "images_per_s"
    assert [row["images_per_s"] for row in table] == [1234.5, None]  # a run from before it was recorded: empty
