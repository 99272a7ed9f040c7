"""metrics.csv, curves.png and the console line per epoch, and how they survive a resume."""

import csv
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from apa_lightning.callbacks.epoch_metrics import (
    EpochMetrics,
    best_epoch,
    csv_text,
    curves_figure,
    main_metric,
    shown_on_console,
)
from apa_lightning.errors import ApaError
from apa_lightning.tasks.train import compose_config, train

SHORT = [
    "trainer.accelerator=cpu",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "logger=csv",
    "+trainer.enable_progress_bar=false",
]


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_metrics_csv_has_a_row_per_epoch_with_the_logged_values_and_curves(make_cfg, caplog):
    cfg = make_cfg("model=ae", *SHORT, "trainer.max_epochs=2")
    with caplog.at_level(logging.INFO, logger="apa_lightning"):
        best = train(cfg)
    out = Path(cfg.paths.output_dir)
    rows = read(out / "metrics.csv")
    assert list(rows[0])[:3] == ["epoch", "step", "train/loss"] and list(rows[0])[-2:] == ["lr", "time_s"]
    assert {"val/loss", "val/mse", "val/psnr", "val/ssim"} <= rows[0].keys()
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "2"), ("2", "4")]
    assert [float(r["lr"]) for r in rows] == [cfg.model.optimizer.lr] * 2
    # the same numbers as Lightning's CSV logger (its epochs count from 0) and metrics.json
    logged = read(out / "csv" / "steps.csv")
    for row in rows:
        epoch = str(int(row["epoch"]) - 1)
        for key in ("train/loss", "val/loss", "val/psnr"):
            (value,) = [r[key] for r in logged if r["epoch"] == epoch and r.get(key)]
            assert float(row[key]) == pytest.approx(float(value), rel=1e-6), key
    record = json.loads((out / "metrics.json").read_text())
    assert min(float(r["val/loss"]) for r in rows) == pytest.approx(record["best_score"], rel=1e-6)
    assert best == pytest.approx(record["best_score"])
    assert Image.open(out / "curves.png").size == (1000, 400)  # loss and psnr panels

    lines = [r.getMessage() for r in caplog.records if r.name == "apa_lightning.callbacks.epoch_metrics"]
    assert len(lines) == 2
    for line, row in zip(lines, rows, strict=True):
        match = re.fullmatch(r"epoch (\d)/2  train/loss (\S+)  val/loss (\S+)  val/psnr (\S+)  (\d+\.\d) s", line)
        assert match, line
        assert match[1] == row["epoch"]
        for text, key in zip(match.groups()[1:4], ("train/loss", "val/loss", "val/psnr"), strict=True):
            assert float(text) == pytest.approx(float(row[key]), rel=1e-3)


def test_a_resumed_run_keeps_the_finished_epochs_rows_once(make_cfg):
    cfg = make_cfg("model=ae", *SHORT, "trainer.max_epochs=2")
    train(cfg)
    out = Path(cfg.paths.output_dir)
    first = read(out / "metrics.csv")
    # a row written after the last checkpoint (killed in between): the resumed run trains that epoch again
    stale = {**first[-1], "epoch": "3", "step": "6", "val/loss": "99"}
    (out / "metrics.csv").write_text(csv_text([{k: float(v) for k, v in r.items()} for r in [*first, stale]]))
    resumed = compose_config(
        [*[f"paths.{k}={v}" for k, v in cfg.paths.items() if k in ("root_dir", "output_dir")], "model=ae", *SHORT]
        + ["trainer.max_epochs=3", f"resume={out}"]
    )
    train(resumed)
    rows = read(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[2]["val/loss"] != "99"
    assert rows[:2] == first and rows[2]["step"] == "6"


def test_epochs_without_validation_leave_the_validation_cells_empty():
    rows = [{"epoch": 1.0, "step": 2.0, "train/loss": 0.5, "lr": 0.1}, {"epoch": 2.0, "step": 4.0, "val/acc": 0.7}]
    assert csv_text(rows) == "epoch,step,train/loss,val/acc,lr\n1,2,0.5,,0.1\n2,4,,0.7,\n"
    assert main_metric(rows, ["psnr", "acc"]) == "acc" and main_metric(rows, ["psnr"]) is None
    line = EpochMetrics(monitor="val/acc").summary_line({**rows[1], "time_s": 1.25}, "acc", None)
    assert line == "epoch 2  val/acc 0.7000  1.2 s"
    with pytest.raises(ApaError, match="plot_interval_s=-1 must be >= 0"):
        EpochMetrics(plot_interval_s=-1)


@pytest.mark.parametrize("sanity_steps, epochs_trained", [(2, 0), (0, 1)])
def test_main_metrics_naming_nothing_the_model_logs_fails_the_run(make_cfg, sanity_steps, epochs_trained):
    cfg = make_cfg(
        "model=ae",
        *SHORT,
        "trainer.max_epochs=3",
        f"+trainer.num_sanity_val_steps={sanity_steps}",
        "callbacks.epoch_metrics.main_metrics=[pnsr,acc]",
    )
    with pytest.raises(
        ApaError, match=r"main_metrics=\[pnsr,acc\]: this model logs none .* psnr, ssim. Did you mean psnr\?"
    ):
        train(cfg)
    out = Path(cfg.paths.output_dir)
    # refused after the sanity check's validation, before training; without one at the end of the first epoch
    assert (len(read(out / "metrics.csv")) if (out / "metrics.csv").exists() else 0) == epochs_trained
    assert json.loads((out / "metrics.json").read_text())["status"] == "failed"


def test_main_metrics_given_as_one_name_and_a_run_that_never_validates(caplog):
    assert EpochMetrics(main_metrics="mca").main_metrics == ["mca"]  # main_metrics=mca, not [m, c, a]
    callback = EpochMetrics(main_metrics=["pnsr"])
    callback.rows = [{"epoch": 1.0, "step": 2.0, "train/loss": 0.5}]
    with caplog.at_level(logging.WARNING):
        callback.on_train_end(SimpleNamespace(is_global_zero=False), None)
    assert "main_metrics=['pnsr']: no epoch was validated and training logged none of them" in caplog.text


def test_curves_draw_the_loss_on_a_log_scale_and_mark_the_best_epoch():
    losses = [2.0, 0.5, 0.1, 0.2]  # epoch 3 is best: its checkpoint is the one tested
    rows = [
        {"epoch": float(e), "train/loss": loss * 1.1, "val/loss": loss, "val/acc": 0.9 - loss / 10}
        for e, loss in enumerate(losses, start=1)
    ]
    assert best_epoch(rows, "val/loss", "min") == 3
    assert best_epoch(rows, "val/acc", "max") == 3
    assert best_epoch(rows, None, "min") is None and best_epoch(rows, "val/psnr", "min") is None
    figure = curves_figure(rows, "acc", best_epoch(rows, "val/loss", "min"))
    loss_ax, acc_ax = figure.axes
    assert (loss_ax.get_yscale(), acc_ax.get_yscale()) == ("log", "linear")
    for ax in (loss_ax, acc_ax):
        (marker,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert list(marker.get_xdata()) == [3, 3] and marker.get_label() == "best (epoch 3)"
    # train and val apart by colour; a loss that is not positive everywhere stays linear
    train_line, val_line = loss_ax.get_lines()[:2]
    assert train_line.get_color() != val_line.get_color()
    negative = [{**row, "val/loss": -row["val/loss"]} for row in rows]
    assert curves_figure(negative, None).axes[0].get_yscale() == "linear"


def test_long_runs_print_fewer_epoch_lines_and_keep_every_epoch_in_the_log(make_cfg, caplog, tmp_path):
    assert [e for e in range(1, 101) if shown_on_console(e, 100, 20)] == [1, *range(5, 101, 5)]
    assert all(shown_on_console(e, 12, 20) for e in range(1, 13))  # short runs: every epoch
    assert all(shown_on_console(e, 100, 0) for e in range(1, 101))
    cfg = make_cfg("model=ae", *SHORT, "trainer.max_epochs=6", "callbacks.epoch_metrics.console_lines=2")
    cfg.model.optimizer.lr = 0.0  # nothing learnt: the first epoch's val/loss stays the best (first of equals)
    run_log = logging.FileHandler(tmp_path / "run.log")
    logging.getLogger().addHandler(run_log)
    try:
        with caplog.at_level(logging.INFO, logger="apa_lightning"):
            train(cfg)
    finally:
        logging.getLogger().removeHandler(run_log)
        run_log.close()
    console = [r.getMessage() for r in caplog.records if r.name == "apa_lightning.callbacks.epoch_metrics"]
    assert [line.split()[1] for line in console] == ["1/6", "3/6", "6/6"]  # first, every 3rd, last; best is 1
    logged = [line.split()[1] for line in (tmp_path / "run.log").read_text().splitlines() if line.startswith("epoch")]
    assert logged == [f"{e}/6" for e in range(1, 7)]


def test_a_best_epoch_left_off_the_console_is_printed_at_the_end(caplog):
    callback = EpochMetrics(console_lines=2)
    callback.rows = [{"epoch": float(e), "val/loss": 1.0 - abs(e - 4) / 10, "time_s": 1.0} for e in range(1, 7)]
    callback.rows[3]["val/loss"] = 0.1  # epoch 4: not one of those shown (1, 3, 6)
    callback._checkpoint_monitor, callback._shown, callback._plotted_rows = "val/loss", {1, 3, 6}, 6
    trainer = SimpleNamespace(is_global_zero=True, progress_bar_callback=None, max_epochs=6)
    with caplog.at_level(logging.INFO, logger="apa_lightning"):
        callback.on_train_end(trainer, None)
    assert caplog.messages == ["best epoch 4/6  val/loss 0.1000  1.0 s"]
