"""``metrics.csv`` and ``curves.png`` in the run directory and one console line per epoch, without TensorBoard."""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from difflib import get_close_matches
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from apa_lightning.errors import ApaError
from apa_lightning.runs.figures import save_figure
from apa_lightning.runs.files import write_text_atomically
from apa_lightning.runs.record import to_log_file

log = logging.getLogger(__name__)

Row = dict[str, float]
SPLITS = ("train/", "val/")  # the metrics a row holds, with the learning rates and times


def read_rows(path: Path) -> list[Row]:
    """The rows of an earlier ``metrics.csv`` (empty cells left out). Raises ApaError when it is not one."""
    try:
        with open(path, newline="") as f:
            rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    except (ValueError, csv.Error) as exc:
        raise ApaError(
            f"{path} is not a metrics.csv of this tool ({exc}); move it away and resume again (the epochs before "
            "the resume are then missing from it)."
        ) from exc
    if any("epoch" not in row for row in rows):
        raise ApaError(f"{path} has rows without an epoch; move it away and resume again.")
    return rows


def columns(rows: Sequence[Row]) -> list[str]:
    """``epoch``, ``step``, the ``train/`` then the ``val/`` metrics (sorted), the learning rates, ``time_s``."""
    keys = {key for row in rows for key in row}
    metrics = sorted(k for k in keys if k.startswith("train/")) + sorted(k for k in keys if k.startswith("val/"))
    rates = sorted(k for k in keys if k == "lr" or k.startswith("lr/"))
    return ["epoch", "step", *metrics, *rates, *(["time_s"] if "time_s" in keys else [])]


def csv_text(rows: Sequence[Row]) -> str:
    """``rows`` as CSV under ``columns(rows)``; a metric not logged in an epoch is an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(rows), restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: int(v) if k in ("epoch", "step") else v for k, v in row.items()})
    return buffer.getvalue()


def main_metric(rows: Sequence[Row], candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` logged as ``val/<name>`` (or ``train/<name>``), else None."""
    keys = {key for row in rows for key in row}
    return next((name for name in candidates if f"val/{name}" in keys or f"train/{name}" in keys), None)


def best_epoch(rows: Sequence[Row], monitor: str | None, mode: str) -> int | None:
    """The epoch whose ``monitor`` value is the best (``mode`` ``min`` or ``max``), the first of equals, as
    ``ModelCheckpoint`` with ``save_top_k=1`` keeps it; None when no row has ``monitor``."""
    scored = [(row[monitor], int(row["epoch"])) for row in rows if monitor and monitor in row]
    if not scored:
        return None
    best = min(value for value, _ in scored) if mode == "min" else max(value for value, _ in scored)
    return next(epoch for value, epoch in scored if value == best)


def minor_label(span: float) -> Callable[[float, int], str]:
    """A tick formatter for the 2..9 ticks between a log axis's powers of ten: all labelled over less than a
    decade (``span`` = largest / smallest value), the 2s and 5s over up to three, none over more."""
    digits = "23456789" if span < 10 else "25" if span < 1000 else ""

    def label(y: float, _: int) -> str:
        text = f"{y:g}"
        return text if text.lstrip("0.")[:1] in digits else ""

    return label


def curves_figure(rows: Sequence[Row], metric: str | None, best: int | None = None) -> Figure:
    """The loss and ``metric`` per epoch, training and validation, one panel each; the loss on a log scale (when
    all its values are positive: the first epoch's would flatten the rest), and the ``best`` epoch (that of the
    checkpoint that is tested) as a dashed line in every panel."""
    names = ["loss", *([metric] if metric else [])]
    figure = Figure(figsize=(5 * len(names), 4))
    for i, name in enumerate(names, start=1):
        ax = figure.add_subplot(1, len(names), i)
        values = []
        for split, colour in (("train", "C0"), ("val", "C1")):
            points = [(row["epoch"], row[f"{split}/{name}"]) for row in rows if f"{split}/{name}" in row]
            if points:
                ax.plot(*zip(*points, strict=True), "o-", color=colour, markersize=3, label=split)
                values += [value for _, value in points]
        if name == "loss" and values and min(values) > 0:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))  # 0.01, not 10^-2
            ax.yaxis.set_minor_formatter(FuncFormatter(minor_label(max(values) / min(values))))
        if best is not None:
            ax.axvline(best, color="0.3", linestyle="--", linewidth=1, label=f"best (epoch {best})")
        ax.set(xlabel="epoch", ylabel=f"{name} (dB)" if name == "psnr" else name, title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both" if ax.get_yscale() == "log" else "major")
        ax.legend()
    figure.tight_layout()
    return figure


def announce(trainer: L.Trainer, line: str) -> None:
    """Log ``line`` at INFO. While a progress bar is shown, the console gets it through the bar (printed above
    it, not glued to its end) and the log's file handlers get the record directly."""
    bar = trainer.progress_bar_callback
    if bar is None or not bar.is_enabled:
        log.info(line)
        return
    if log.isEnabledFor(logging.INFO):
        bar.print(line)
        to_log_file(line, logger=log)


def shown_on_console(epoch: int, max_epochs: int | None, lines: int) -> bool:
    """Whether epoch ``epoch`` (from 1) of ``max_epochs`` gets its line on the console: the first, the last and
    every ``ceil(max_epochs / lines)``-th, so about ``lines`` lines; every epoch without a known budget or with
    ``lines`` 0."""
    if not lines or not max_epochs or max_epochs <= lines:
        return True
    return epoch in (1, max_epochs) or epoch % math.ceil(max_epochs / lines) == 0


class EpochMetrics(L.Callback):
    """After every training epoch (and its validation), global rank 0:

    - writes ``metrics.csv`` into the run directory: one row per epoch with ``epoch`` (from 1), ``step`` (the
      global step), every ``train/`` and ``val/`` metric in ``trainer.callback_metrics`` (the validation ones only
      in epochs that validated), the learning rate of each parameter group during the epoch (``lr``, then
      ``lr/pg1``, ... over all optimizers) and ``time_s`` (the epoch's wall time);
    - draws ``curves.png``: the loss and the main metric (the module's ``main_metric``, the one TensorBoard's
      train-and-val chart shows, or the first of ``main_metrics`` that is logged; a run that logs none of the
      given ``main_metrics`` fails after the sanity check's validation, else (``num_sanity_val_steps=0``) at the
      end of its first validated epoch, naming the metrics it logs) per epoch, training against validation, the
      loss on a log scale and the checkpoint's best epoch marked; at most every ``plot_interval_s`` seconds
      (drawing takes a few tenths of a second, more than a tiny model's epoch) and after the last epoch;
    - logs one line at INFO (``announce``), the losses, the main metric and ``monitor``:
      ``epoch 3/10  train/loss 0.0213  val/loss 0.0198  val/psnr 21.30  12.4 s``; every epoch's line goes to
      ``run.log``, but with more than ``console_lines`` epochs the console gets only about that many
      (``shown_on_console``: the first, the last, every n-th) and, at the end, the best epoch's line if it was
      not among them (``best epoch 37/100 ...``).

    Both files are written atomically. A resumed run keeps the rows of the epochs its checkpoint had finished
    and drops any later ones (written after that checkpoint), so each epoch appears once.
    """

    def __init__(
        self,
        main_metrics: Sequence[str] | None = None,
        monitor: str | None = None,
        filename: str = "metrics.csv",
        curves: str = "curves.png",
        plot_interval_s: float = 0.0,
        console_lines: int = 20,
    ) -> None:
        if plot_interval_s < 0:
            raise ApaError(f"callbacks.epoch_metrics.plot_interval_s={plot_interval_s} must be >= 0 (0: every epoch).")
        if isinstance(main_metrics, str):  # main_metrics=mca on the command line
            main_metrics = [main_metrics]
        self.main_metrics, self.monitor = list(main_metrics or []), monitor
        self._check_main_metrics = bool(self.main_metrics)  # given ones: a misspelt name must not pass silently
        self.filename, self.curves, self.plot_interval_s = filename, curves, plot_interval_s
        self.rows: list[Row] = []
        self._start, self._rates, self._validated = 0.0, {}, False
        self._plotted, self._plotted_rows = float("-inf"), 0
        self._checkpoint_monitor: str | None = None
        self._checkpoint_mode = "min"
        self.console_lines, self._shown = console_lines, set[int]()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(trainer.default_root_dir) / self.filename
        finished = trainer.current_epoch  # after a resume: the epochs its checkpoint had finished
        earlier = read_rows(path) if finished and path.is_file() and trainer.is_global_zero else []
        self.rows = [row for row in earlier if row["epoch"] <= finished]
        checkpoint = trainer.checkpoint_callback  # its monitor picks the checkpoint that is tested: marked
        self._checkpoint_monitor = checkpoint.monitor if isinstance(checkpoint, ModelCheckpoint) else None
        self._checkpoint_mode = checkpoint.mode if isinstance(checkpoint, ModelCheckpoint) else "min"
        if not self.main_metrics and getattr(pl_module, "main_metric", None):
            self.main_metrics = [pl_module.main_metric]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        groups = [group for optimizer in trainer.optimizers for group in optimizer.param_groups]
        self._rates = {"lr" if i == 0 else f"lr/pg{i}": float(group["lr"]) for i, group in enumerate(groups)}
        self._start, self._validated = time.perf_counter(), False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the sanity check's validation metrics (reset after it): a misspelt main_metrics fails before training
        logged = {key: 0.0 for key in trainer.callback_metrics if key.startswith("val/")}
        if trainer.sanity_checking and self._check_main_metrics and logged:
            self._check_main_metrics = False
            self.check_main_metrics([logged])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        splits = SPLITS if self._validated else ("train/",)  # unvalidated epochs: no stale val values
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(splits) and v.numel() == 1}
        row = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step, **metrics, **self._rates}
        row["time_s"] = round(time.perf_counter() - self._start, 2)
        self.rows.append(row)
        if trainer.is_global_zero:
            out = Path(trainer.default_root_dir)
            out.mkdir(parents=True, exist_ok=True)
            write_text_atomically(out / self.filename, csv_text(self.rows))
            if time.perf_counter() - self._plotted >= self.plot_interval_s:
                self.plot(out)
            line = self.summary_line(row, main_metric(self.rows, self.main_metrics), trainer.max_epochs)
            if shown_on_console(int(row["epoch"]), trainer.max_epochs, self.console_lines):
                announce(trainer, line)
                self._shown.add(int(row["epoch"]))
            else:
                to_log_file(line, logger=log)
        if self._check_main_metrics and self._validated:  # on every rank: they all stop
            self._check_main_metrics = False
            self.check_main_metrics(self.rows)

    def check_main_metrics(self, rows: Sequence[Row]) -> None:
        """Raise ApaError when none of ``main_metrics`` is among the ``train/`` or ``val/`` metrics of ``rows``."""
        if main_metric(rows, self.main_metrics) is None:
            logged = sorted({key.split("/", 1)[1] for row in rows for key in row if key.startswith(SPLITS)})
            close = sorted({c for name in self.main_metrics for c in get_close_matches(name, logged, n=1)})
            guess = f" Did you mean {' or '.join(close)}?" if close else ""
            raise ApaError(
                f"callbacks.epoch_metrics.main_metrics=[{','.join(self.main_metrics)}]: this model logs none of them "
                f"(as train/ or val/ metrics); it logs {', '.join(logged)}.{guess} Name one of those, or set "
                "callbacks.epoch_metrics.main_metrics=null for the model's own."
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._check_main_metrics and self.rows and main_metric(self.rows, self.main_metrics) is None:
            # no epoch validated (limit_val_batches=0): nothing to fail the run for, but not a silent blank
            log.warning(
                "callbacks.epoch_metrics.main_metrics=%s: no epoch was validated and training logged none of "
                "them; curves.png shows the loss only.",
                self.main_metrics,
            )
        if trainer.is_global_zero and self._plotted_rows < len(self.rows):
            self.plot(Path(trainer.default_root_dir))
        best = best_epoch(self.rows, self._checkpoint_monitor, self._checkpoint_mode)
        if trainer.is_global_zero and best is not None and best not in self._shown:  # thinned out: shown now
            (row,) = [row for row in self.rows if int(row["epoch"]) == best]
            line = self.summary_line(row, main_metric(self.rows, self.main_metrics), trainer.max_epochs)
            announce(trainer, f"best {line}")

    def plot(self, out: Path) -> None:
        """Draw ``curves.png`` of the rows so far."""
        best = best_epoch(self.rows, self._checkpoint_monitor, self._checkpoint_mode)
        figure = curves_figure(self.rows, main_metric(self.rows, self.main_metrics), best)
        save_figure(out / self.curves, figure, dpi=100)
        self._plotted, self._plotted_rows = time.perf_counter(), len(self.rows)

    def summary_line(self, row: Row, metric: str | None, max_epochs: int | None) -> str:
        """``epoch 3/10  train/loss 0.0213  val/loss 0.0198  val/psnr 21.3  12.4 s``: the epoch's losses, main
        metric and ``monitor``, those it has."""
        shown = ["train/loss", "val/loss", *([f"train/{metric}", f"val/{metric}"] if metric else [])]
        if self.monitor and self.monitor not in shown:
            shown.append(self.monitor)
        epoch = f"epoch {int(row['epoch'])}" + (f"/{max_epochs}" if max_epochs and max_epochs > 0 else "")
        values = [f"{key} {row[key]:#.4g}" for key in shown if key in row]
        return "  ".join([epoch, *values, f"{row['time_s']:.1f} s"])
