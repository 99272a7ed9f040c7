"""``task=detect``: train a YOLO detector with ultralytics' own trainer, recorded like every other run.

The run directory is ultralytics' ``save_dir`` (``weights/last.pt``, ``weights/best.pt``, ``results.csv``,
``args.yaml``) and also holds what every run of this project has: ``metrics.json``, TensorBoard's event files
and ``images/``.
"""

from __future__ import annotations

import csv
import logging
import math
import pickle
import secrets
import shutil
import types
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from apa_lightning.detection.kitti import KittiDetectionData
from apa_lightning.detection.yolo import (
    YoloDetector,
    amp_check_without_download,
    is_yolo_config,
    setup_ultralytics,
    ultralytics_amp,
    ultralytics_device,
)
from apa_lightning.errors import ApaError, describe
from apa_lightning.runs.files import write_atomically, write_text_atomically
from apa_lightning.runs.hparams import write_final
from apa_lightning.runs.lock import locked
from apa_lightning.runs.record import RunRecord, read_run_record

log = logging.getLogger(__name__)

# ultralytics' results.csv columns under our names; the other columns (train/box_loss, val/cls_loss, lr/pg0 ...)
# already follow our `split/name` style
RENAMED_COLUMNS = {
    "metrics/precision(B)": "val/precision",
    "metrics/recall(B)": "val/recall",
    "metrics/mAP50(B)": "val/map50",
    "metrics/mAP50-95(B)": "val/map50_95",
}
LOSSES = ("box_loss", "cls_loss", "dfl_loss")
EPOCH_METRICS = (
    *RENAMED_COLUMNS.values(),
    "val/f1",
    *(f"{split}/{name}" for split in ("train", "val") for name in ("loss", *LOSSES)),
)


def f1_score(precision: float, recall: float) -> float:
    """The harmonic mean of precision and recall (0 when both are 0)."""
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def epoch_scalars(row: dict[str, str]) -> dict[str, float]:
    """One row of ultralytics' results.csv as our scalars: its columns renamed, plus ``val/f1`` and the summed
    ``train/loss`` and ``val/loss``."""
    scalars = {RENAMED_COLUMNS.get(k, k): float(v) for k, v in row.items() if k not in ("epoch", "time")}
    for split in ("train", "val"):
        if all(f"{split}/{name}" in scalars for name in LOSSES):
            scalars[f"{split}/loss"] = sum(scalars[f"{split}/{name}"] for name in LOSSES)
    if "val/precision" in scalars and "val/recall" in scalars:
        scalars["val/f1"] = f1_score(scalars["val/precision"], scalars["val/recall"])
    return scalars


def read_results(path: Path) -> list[tuple[int, dict[str, float]]]:
    """The epochs of a results.csv as (epoch number, scalars), in order; empty when there is no file."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]
    return [(int(float(row["epoch"])), epoch_scalars(row)) for row in rows]


class ResultsToTensorBoard:
    """An ultralytics callback that copies each epoch of results.csv not yet copied into TensorBoard (step =
    epoch), so a resumed run's TensorBoard holds the epochs before the interruption too."""

    def __init__(self, results_csv: Path, writer: Any) -> None:
        self.results_csv, self.writer, self.written = results_csv, writer, 0

    def __call__(self, trainer: Any = None) -> None:
        epochs = read_results(self.results_csv)
        for epoch, scalars in epochs[self.written :]:
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, epoch)
        self.written = len(epochs)
        self.writer.flush()


def final_metrics(metrics: Any) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Overall and per-class mAP50, mAP50-95, precision, recall and F1 from ultralytics' DetMetrics."""
    box = metrics.box
    overall = {
        "val/map50": float(box.map50),
        "val/map50_95": float(box.map),
        "val/precision": float(box.mp),
        "val/recall": float(box.mr),
        "val/f1": f1_score(float(box.mp), float(box.mr)),
    }
    per_class = {}
    for i, c in enumerate(box.ap_class_index):
        per_class[metrics.names[int(c)]] = {
            "instances": int(metrics.nt_per_class[int(c)]),
            "map50": float(box.ap50[i]),
            "map50_95": float(box.ap[i]),
            "precision": float(box.p[i]),
            "recall": float(box.r[i]),
            "f1": float(box.f1[i]),
        }
    return overall, per_class


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _image_files(entries: str | list[str]) -> list[Path]:
    """The images a data.yaml split names (folders, .txt lists of image paths, or images), sorted. A list's
    ``./`` lines are relative to the list's folder, as in ultralytics."""
    images = []
    for entry in [entries] if isinstance(entries, str) else entries:
        path = Path(entry)
        if path.is_dir():
            images += [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        elif path.suffix.lower() == ".txt":
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            listed = [path.parent / line[2:] if line.startswith("./") else Path(line) for line in lines]
            images += [p for p in listed if p.suffix.lower() in IMAGE_SUFFIXES]
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
    return sorted(images)


def save_prediction_examples(
    weights: Path, data_yaml: Path, count: int, detector: YoloDetector, device: str, target: Path
) -> np.ndarray | None:
    """Predict on the first ``count`` validation images, stack them with their boxes into one RGB image, save it
    as ``target`` (PNG) and return it; None when there is nothing to show."""
    import yaml
    from PIL import Image
    from ultralytics import YOLO

    images = _image_files(yaml.safe_load(data_yaml.read_text())["val"])[:count]
    if not images:
        return None
    results = YOLO(str(weights)).predict(
        [str(p) for p in images],
        imgsz=detector.imgsz,
        conf=detector.conf,
        iou=detector.iou,
        device=device,
        verbose=False,
    )
    panels = [r.plot()[..., ::-1] for r in results]  # BGR -> RGB
    width = max(p.shape[1] for p in panels)
    grid = np.concatenate([np.pad(p, ((0, 4), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels])
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, lambda f: Image.fromarray(np.ascontiguousarray(grid)).save(f, format="PNG"))
    return grid


def _detection_parts(cfg: DictConfig) -> tuple[KittiDetectionData, YoloDetector]:
    kitti = f"{KittiDetectionData.__module__}.{KittiDetectionData.__qualname__}"
    if not is_yolo_config(cfg.model) or cfg.data.get("_target_") != kitti:
        raise ApaError(
            f"task={cfg.task} trains a YOLO detector: it needs model=yolo and data=kitti (e.g. "
            "experiment=kitti_yolo_scratch); task=train trains the other models."
        )
    return instantiate(cfg.data, _convert_="all"), instantiate(cfg.model, _convert_="all")


class _Placeholder:
    """Stands in for every ultralytics object of a checkpoint read by ``read_ultralytics_checkpoint``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _NoUltralyticsUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "ultralytics":
            return _Placeholder
        return super().find_class(module, name)


def read_ultralytics_checkpoint(path: Path) -> dict[str, Any]:
    """An ultralytics checkpoint with its model objects left out (placeholders): its epoch, optimizer state and
    train_args. Imports torch but not ultralytics, which must not start before it is told to write inside the run
    directory (``setup_ultralytics``); so Hydra's on_run_start callback can check a resume too. (Ultralytics' own
    loaders import it: this relies on its checkpoint keeping those plain values, which
    tests/test_library_contracts.py pins.)"""
    import torch

    stand_in = types.ModuleType("no_ultralytics_pickle")
    stand_in.Unpickler = _NoUltralyticsUnpickler
    stand_in.load = lambda f, **kwargs: _NoUltralyticsUnpickler(f, **kwargs).load()
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, pickle_module=stand_in)
    except Exception as exc:  # not a torch file, truncated ...
        raise ApaError(f"{path} could not be read as an ultralytics checkpoint: {describe(exc)}") from None
    if not isinstance(checkpoint, dict):
        raise ApaError(f"{path} is not an ultralytics checkpoint (no dictionary of training state).")
    return checkpoint


def resumable_checkpoint(cfg: DictConfig) -> tuple[Path, int] | None:
    """The checkpoint to resume from (``ckpt_path``, or ``<resume>/weights/last.pt``) and its number of finished
    epochs; None for a new run. Raises ApaError unless it is an unfinished ultralytics training checkpoint that
    was started with ``trainer.max_epochs`` epochs (ultralytics resumes to a checkpoint's own epochs only).

    Called before anything of the run directory is written, and by ``config_checks.check_checkpoint`` before Hydra
    rewrites that directory's config files."""
    if cfg.get("ckpt_path"):
        ckpt_path = cfg.ckpt_path
    elif cfg.get("resume"):
        ckpt_path = str(Path(cfg.resume) / "weights" / "last.pt")
        if not Path(ckpt_path).is_file():
            raise ApaError(
                f"resume={cfg.resume} has no weights/last.pt: it is not a detection run directory, or the run "
                "stopped before its first epoch ended (then start it again)."
            )
    else:
        return None
    path = Path(ckpt_path).expanduser().resolve()
    if not path.is_file() or path.suffix != ".pt":
        raise ApaError(
            f"ckpt_path={ckpt_path} is not an ultralytics checkpoint file; pass <run dir>/weights/last.pt of the "
            "detection run to resume."
        )
    checkpoint = read_ultralytics_checkpoint(path)
    if checkpoint.get("epoch", -1) < 0 or checkpoint.get("optimizer") is None:
        raise ApaError(
            f"ckpt_path={ckpt_path} holds a finished training (no epoch and optimizer state to resume). To train "
            f"further, start a new run from its weights: model.weights={path} (without ckpt_path)."
        )
    train_args = checkpoint.get("train_args") or {}
    planned, max_epochs = train_args.get("epochs"), cfg.trainer.get("max_epochs")
    if isinstance(planned, int) and not train_args.get("time") and max_epochs != planned:
        raise ApaError(
            f"trainer.max_epochs={max_epochs}, but {path} belongs to a training of {planned} epochs, and "
            f"ultralytics resumes a training only to its own number of epochs. Resume with "
            f"trainer.max_epochs={planned}, or start a new run from its weights: model.weights={path} "
            "(without resume / ckpt_path)."
        )
    if path.parent.name == "weights" and (path.parent.parent / "metrics.json").is_file():
        read_run_record(path.parent.parent / "metrics.json")  # extended when the run ends: refused now, not then
    return path, checkpoint["epoch"] + 1


def _prepare_resume(checkpoint: Path, finished: int, run_dir: Path) -> Path:
    """The last.pt to resume from in ``run_dir``, with ``results.csv`` cut to the ``finished`` epochs it holds
    (a stop between an epoch's row and its checkpoint leaves one row more) and TensorBoard emptied, to be written
    again from it. A checkpoint of another directory is copied in with that run's best.pt and results.csv (the
    other run stays as it was), so the run continues with its whole history."""
    weights = run_dir / "weights"
    if checkpoint.parent != weights:
        weights.mkdir(parents=True, exist_ok=True)
        for source, target in (
            (checkpoint, weights / "last.pt"),
            (checkpoint.parent / "best.pt", weights / "best.pt"),
            (checkpoint.parent.parent / "results.csv", run_dir / "results.csv"),
        ):
            if source.is_file():
                with open(source, "rb") as original:
                    write_atomically(target, lambda f, original=original: shutil.copyfileobj(original, f))
    results = run_dir / "results.csv"
    if results.is_file():
        try:
            header, *rows = results.read_bytes().decode().splitlines(keepends=True)
            kept = [row for row in rows if int(float(row.split(",")[0])) <= finished]
        except (ValueError, UnicodeDecodeError) as exc:  # empty, not text, or a row without an epoch number
            raise ApaError(
                f"{results} is damaged ({describe(exc)}): it is ultralytics' table of the epochs, which the resumed "
                "run continues. Delete it (the earlier epochs then leave the table and the curves), then resume again."
            ) from exc
        write_text_atomically(results, "".join([header, *kept]))
    for event_file in run_dir.glob("events.out.tfevents.*"):
        event_file.unlink()
    return weights / "last.pt"


def _best_score(epochs: list[tuple[int, dict[str, float]]], metric: str, mode: str) -> float | None:
    values = [s[metric] for _, s in epochs if metric in s and math.isfinite(s[metric])]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def train(cfg: DictConfig) -> float | None:
    """``_train`` holding the run directory's lock (``run_lock.locked``): one run at a time in it."""
    run_dir = Path(cfg.paths.output_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with locked(run_dir):
        return _train(cfg)


def _train(cfg: DictConfig) -> float | None:
    """Train ``cfg.model`` (YOLO) on ``cfg.data`` with ultralytics, validate ``best.pt`` on the validation split
    and write ``metrics.json``, TensorBoard scalars and ``images/val_predictions.png`` into the run directory.

    Returns the best per-epoch value of ``cfg.optimized_metric`` (None when none was recorded). A failure still
    writes ``metrics.json`` (status ``failed`` or ``interrupted``, with the error); ``weights/last.pt`` resumes.
    """
    from torch.utils.tensorboard import SummaryWriter

    run_dir = Path(cfg.paths.output_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    # a refused resume fails here, before anything of the run it names (its metrics.json) is written
    resume_from = resumable_checkpoint(cfg)
    resumed = {} if resume_from is None else {"resumed_from": str(resume_from[0])}
    metrics = None
    record = RunRecord(cfg, run_dir, results=lambda: results(run_dir, metrics, cfg), **resumed)
    with record, ExitStack() as end:  # the TensorBoard writer is closed first, then the record
        if cfg.optimized_metric not in EPOCH_METRICS:
            raise ApaError(
                f"optimized_metric={cfg.optimized_metric} is not a detection metric; use one of "
                f"{', '.join(EPOCH_METRICS)} (the kitti experiments use val/map50_95, which also picks best.pt)."
            )
        if not isinstance(cfg.trainer.get("max_epochs"), int) or cfg.trainer.max_epochs < 1:
            raise ApaError(f"trainer.max_epochs={cfg.trainer.get('max_epochs')}: YOLO training needs a number >= 1.")
        amp = ultralytics_amp(cfg.trainer.get("precision", "32-true"))
        data, detector = _detection_parts(cfg)
        weights = detector.weights_file()
        setup_ultralytics(run_dir)
        data_yaml = data.prepare(run_dir)
        import ultralytics.engine.trainer
        from ultralytics import YOLO

        # Private hook: ultralytics' trainer calls this module global before training with AMP, and its own
        # downloads yolo26n.pt (YOLO_OFFLINE does not stop that download); no train argument skips it but amp=bf16.
        # tests/test_library_contracts.py pins the name, tests/test_detection.py that the stand-in runs.
        ultralytics.engine.trainer.check_amp = amp_check_without_download
        device = ultralytics_device(cfg.trainer.accelerator, cfg.trainer.devices)
        seed = cfg.seed if cfg.get("seed") is not None else secrets.randbelow(2**31)  # ultralytics always seeds
        common = {"data": str(data_yaml), "device": device, "workers": data.num_workers, "save_dir": str(run_dir)}
        common["plots"] = False  # our own figures instead; ultralytics' plots take time on every validation
        if resume_from is not None:
            model = YOLO(str(_prepare_resume(*resume_from, run_dir)))
            arguments = {**common, "resume": True}
        else:
            try:
                model = YOLO(detector.arch)
            except FileNotFoundError:
                raise ApaError(
                    f"model.arch={detector.arch} is not a model YAML ultralytics ships (e.g. yolov8n.yaml, "
                    "yolov5s.yaml, yolov3.yaml, yolo11s.yaml) nor a file."
                ) from None
            if weights is not None:
                try:
                    model.load(str(weights))
                except Exception as exc:  # not a checkpoint, or one ultralytics cannot read
                    raise ApaError(
                        f"model.weights={detector.weights} could not be loaded as ultralytics weights: {exc}"
                    ) from None
            arguments = {
                **common,
                **detector.train_arguments(),
                "epochs": cfg.trainer.max_epochs,
                "seed": seed,
                "deterministic": bool(cfg.trainer.get("deterministic")),
                "amp": amp,
                "exist_ok": True,
            }
        writer = SummaryWriter(str(run_dir))  # the event files in the run directory: TensorBoard's run name
        end.callback(_close, writer)
        to_tensorboard = ResultsToTensorBoard(run_dir / "results.csv", writer)
        model.add_callback("on_train_start", to_tensorboard)
        model.add_callback("on_fit_epoch_end", to_tensorboard)
        try:
            metrics = model.train(**arguments)
        except SyntaxError as exc:  # ultralytics' answer to an unknown or malformed argument
            raise ApaError(f"model.train_args: {' '.join(str(exc).split())}") from None
        to_tensorboard()  # also the epochs that multi-GPU training logged in its own processes
        if not hasattr(metrics, "box"):  # multi-GPU training validates in a subprocess: validate here
            best = run_dir / "weights" / "best.pt"
            metrics = YOLO(str(best)).val(
                data=str(data_yaml),
                imgsz=detector.imgsz,
                batch=detector.batch,
                device=device.split(",")[0],
                plots=False,
                save_dir=str(run_dir / ".ultralytics" / "val"),
            )
        record.close()
    _finish(cfg, record.data, data_yaml, detector, device, writer.log_dir)
    return record.data["best_score"]


def results(run_dir: Path, metrics: Any, cfg: DictConfig) -> dict[str, Any]:
    """What ``metrics.json`` records of a detection run (see ``RunRecord``): best.pt, the best per-epoch
    ``optimized_metric``, the finished epochs, and best.pt's overall and per-class validation metrics
    (``metrics``, None before they exist)."""
    epochs = read_results(run_dir / "results.csv")
    best = run_dir / "weights" / "best.pt"
    overall, per_class = final_metrics(metrics) if metrics is not None else ({}, {})
    return {
        "best_checkpoint": str(best) if best.is_file() else None,
        "best_score": _best_score(epochs, cfg.optimized_metric, cfg.optimized_mode),
        "epochs": epochs[-1][0] if epochs else 0,
        "test": overall,
        "per_class": per_class,
    }


def _close(writer: Any) -> None:
    """Close a TensorBoard writer; an error closing it is logged, not raised (it must not hide a run's error)."""
    try:
        writer.close()
    except Exception as exc:
        log.error("Could not close the TensorBoard writer: %s", describe(exc))


def _finish(
    cfg: DictConfig, record: dict[str, Any], data_yaml: Path, detector: YoloDetector, device: str, log_dir: str
) -> None:
    """The prediction examples, the final metrics and hyperparameters in TensorBoard, and the console summary."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir = Path(record["run_dir"])
    with SummaryWriter(log_dir) as writer:
        step = record["epochs"]
        if record["best_checkpoint"] and detector.val_images > 0:
            grid = save_prediction_examples(
                Path(record["best_checkpoint"]),
                data_yaml,
                detector.val_images,
                detector,
                device,
                run_dir / "images" / "val_predictions.png",
            )
            if grid is not None:
                writer.add_image("val/predictions", grid, step, dataformats="HWC")
        best = dict(record["test"])  # best.pt's validation metrics
        if record["best_score"] is not None:
            best.setdefault(record["optimized_metric"], record["best_score"])
        write_final(writer, cfg, run_dir, best, step)
    lines = ["Validation metrics of best.pt:"]
    lines += [f"  {name:<16}  {value:.4f}" for name, value in record["test"].items()]
    for name, values in record["per_class"].items():
        lines.append(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items() if k != "instances"))
    if record["best_score"] is not None:
        lines.append(f"Best {record['optimized_metric']}: {record['best_score']:.4f}")
    lines.append(f"Run directory: {run_dir}")
    log.info("\n".join(lines))  # the console and run.log
