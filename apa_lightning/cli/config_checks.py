"""Checks of the composed config before anything heavy is imported and before Hydra makes the run directory:
a bad value gets one clear error naming the key and what it accepts, instead of a library traceback (or an
empty run directory) later. Torch-free."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from apa_lightning.errors import ApaError
from apa_lightning.tasks import TASKS

# where data.augmentation runs: per batch on the device, or per image on the loader's workers
AUGMENT_ON = ("device", "workers")
# Lightning's trainer.precision values (and their short forms), and ours: mixed (tasks/precision.py)
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine")
PRECISIONS += ("transformer-engine-float16", "64", "32", "16", "bf16", "mixed")


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _fraction(value: Any) -> bool:
    """A probability such as a dropout rate: 0 <= p < 1."""
    return _number(value) and 0 <= value < 1


def _batches(value: Any) -> bool:
    """Lightning's limit_*_batches: a fraction in (0, 1], a whole number of batches, or None for all of them."""
    return value is None or (_integer(value) and value >= 0) or (isinstance(value, float) and 0 < value <= 1)


# key -> (accepts the value?, what it accepts). Keys that a config does not have are not checked.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: v is None or _integer(v), "an integer, or null for an unseeded run"),
    "optimized_mode": (lambda v: v in ("min", "max"), "min or max"),
    "matmul_precision": (lambda v: v in ("highest", "high", "medium"), "highest, high (TF32) or medium (bfloat16)"),
    "cpu_threads": (lambda v: v is None or (_integer(v) and v >= 1), "an integer >= 1, or null for one per core"),
    "trainer.max_epochs": (
        lambda v: v is None or (_integer(v) and (v >= 1 or v == -1)),
        "an integer >= 1 (or -1 for no limit)",
    ),
    "trainer.min_epochs": (lambda v: v is None or (_integer(v) and v >= 0), "an integer >= 0"),
    "trainer.log_every_n_steps": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "trainer.check_val_every_n_epoch": (lambda v: v is None or (_integer(v) and v >= 1), "an integer >= 1"),
    "trainer.accumulate_grad_batches": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "trainer.limit_train_batches": (_batches, "a fraction in (0, 1] or a number of batches"),
    "trainer.limit_val_batches": (_batches, "a fraction in (0, 1] or a number of batches"),
    "trainer.limit_test_batches": (_batches, "a fraction in (0, 1] or a number of batches"),
    "data.batch_size": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "data.num_workers": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (0 loads in the main process)"),
    "data.augment_on": (lambda v: v in AUGMENT_ON, " or ".join(AUGMENT_ON)),
    "data.on_device": (_boolean, "true or false"),
    "data.download": (_boolean, "true or false"),
    "data.pin_memory": (_boolean, "true or false"),
    "data.image_size": (lambda v: _integer(v) and v >= 1, "an integer >= 1 (pixels)"),
    "data.channels": (lambda v: v in (1, 3), "1 or 3"),
    "data.num_classes": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "model.optimizer.lr": (lambda v: _number(v) and v > 0, "a number > 0, e.g. 0.001"),
    "model.optimizer.weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "model.optimizer.momentum": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "model.label_smoothing": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "model.net.dropout": (_fraction, "a probability in [0, 1)"),
    "model.net.block_dropout": (
        lambda v: isinstance(v, (list, ListConfig)) and all(_fraction(p) for p in v),
        "a list of probabilities in [0, 1)",
    ),
    "model.net.latent_dim": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "model.net.output_batchnorm": (_boolean, "true or false"),
    "model.compile": (_boolean, "true or false"),
    "model.channels_last": (_boolean, "true or false"),
    "test": (_boolean, "true or false"),
    "trainer.benchmark": (lambda v: v is None or _boolean(v), "true, false or null"),
    "trainer.deterministic": (lambda v: v is None or _boolean(v) or v == "warn", "true, false, warn or null"),
    # found by trying a bad value for every setting of conf/ (docs/errors.md): these reached the run unchecked
    "data.val_size": (lambda v: _integer(v) and v >= 1, "an integer >= 1 (images)"),
    "data.test_size": (lambda v: _integer(v) and v >= 1, "an integer >= 1 (images)"),
    "data.split_seed": (_integer, "an integer"),
    "data.shuffle_seed": (lambda v: v is None or _integer(v), "an integer, or null (torch's initial seed)"),
    "model.net.image_size": (lambda v: _integer(v) and v >= 1, "an integer >= 1 (pixels)"),
    "callbacks.epoch_seed.seed": (lambda v: v is None or _integer(v), "an integer, or null for an unseeded run"),
    "callbacks.font_pictures.seed": (_integer, "an integer"),
    "callbacks.model_checkpoint.save_last": (lambda v: v in (True, False, "link"), "true, false or link"),
    "callbacks.model_checkpoint.auto_insert_metric_name": (_boolean, "true or false"),
    "callbacks.model_checkpoint.mode": (lambda v: v in ("min", "max"), "min or max"),
    "callbacks.model_checkpoint.save_top_k": (lambda v: _integer(v) and v >= -1, "an integer >= -1 (-1: every one)"),
    "callbacks.early_stopping.mode": (lambda v: v in ("min", "max"), "min or max"),
    "callbacks.early_stopping.patience": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (validations)"),
    "callbacks.early_stopping.min_delta": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "callbacks.lr_monitor.logging_interval": (lambda v: v in ("step", "epoch", None), "step, epoch or null"),
    "callbacks.model_summary.depth": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (levels of layers shown)"),
    "model.scheduler.interval": (lambda v: v in ("epoch", "step"), "epoch or step"),
    "model.scheduler.eta_min": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "model.scheduler.mode": (lambda v: v in ("min", "max"), "min or max"),
    "model.manual_optimization": (_boolean, "true or false"),
    "model.wrong_pixel_threshold": (lambda v: v is None or (_number(v) and 0 < v < 1), "a number in (0, 1) or null"),
    "trainer.precision": (
        lambda v: v is None or v in PRECISIONS or str(v) in PRECISIONS,
        "32-true, 16-mixed, bf16-mixed, mixed (bf16 where the GPU has it, else 16), 16-true, bf16-true, 64-true or "
        "null (32-true)",
    ),
    "trainer.gradient_clip_val": (lambda v: v is None or (_number(v) and v >= 0), "a number >= 0, or null for none"),
    "trainer.enable_model_summary": (lambda v: v is None or _boolean(v), "true, false or null"),
    "eda.samples_per_class": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "callbacks.progress_bar.min_interval_s": (lambda v: _number(v) and v >= 0, "a number of seconds >= 0"),
    "callbacks.image_grids.num_images": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "callbacks.image_grids.num_samples": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "callbacks.image_grids.interpolation_steps": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "predict.top_k": (lambda v: _integer(v) and v >= 1, "an integer >= 1 (classes listed per image)"),
    "predict.samples": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (0: no samples.png)"),
    "predict.grid_images": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
}


def check_config(cfg: DictConfig) -> None:
    """Raise ApaError for the first value in ``cfg`` that ``RULES`` does not accept."""
    for key, (accepts, allowed) in RULES.items():
        parent, _, name = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or name not in node:
            continue
        value = OmegaConf.select(cfg, key)
        if not accepts(value):
            shown = "null" if value is None else value
            raise ApaError(f"{key}={shown} is not allowed: {key} must be {allowed}.")
    data = cfg.get("data")
    if isinstance(data, DictConfig) and data.get("on_device") is True:
        steps = data.get("augmentation")
        augmented = isinstance(steps, DictConfig) and any(step is not None for step in steps.values())
        check_on_device(data.get("num_workers", 0), data.get("augment_on", "device"), augmented)


def check_on_device(num_workers: int, augment_on: str = "device", augmented: bool = False) -> None:
    """Raise ApaError when ``data.on_device=true`` comes with what it cannot serve: loader workers, or an
    augmentation (``augmented``: at least one step) on them (``data.augment_on=workers``): its batches never pass
    through a worker, so that augmentation would be silently dropped. The datamodule and the config check both
    call this."""
    if num_workers > 0:
        raise ApaError(
            "data.on_device=true draws the batches on the device in the training process, so it has no loader "
            f"workers; set data.num_workers=0 (got {num_workers}) or data.on_device=false."
        )
    if augmented and augment_on == "workers":
        raise ApaError(
            "data.on_device=true with data.augment_on=workers would train without augmentation: the batches are "
            "drawn on the device and never pass through a loader worker. Set data.augment_on=device (the recipe "
            "runs on the device, per batch) or data.on_device=false (per image, on the loader's workers)."
        )


def _folder_problem(path: Path, create: bool) -> str | None:
    """Why ``path`` cannot serve as a folder of this tool's files, or None. With ``create`` it is made (as Hydra
    would) and a file is written and removed in it; else only its nearest existing part is looked at."""
    if path.exists() and not path.is_dir():
        return "it is a file, not a folder"
    if not create:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            return f"{existing} is a file, not a folder"
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"it cannot be written ({exc.strerror or exc})"
    return None


def check_paths(cfg: DictConfig) -> None:
    """Raise ApaError when ``paths.log_dir`` cannot hold run directories or ``paths.data_dir`` is not a folder."""
    for key, create in (("paths.log_dir", True), ("paths.data_dir", False)):
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        problem = _folder_problem(Path(os.path.expanduser(str(value))).absolute(), create)
        if problem:
            raise ApaError(
                f"{key}={value} cannot be used: {problem}. Set {key} (or APA_ROOT, which holds both data/ and "
                "outputs/) to a writable folder."
            )


def check_before_task(cfg: DictConfig) -> None:
    """Raise ApaError for an unknown ``task`` or a value ``RULES`` does not accept."""
    if cfg.get("task") not in TASKS:
        close = get_close_matches(str(cfg.get("task")), list(TASKS), n=1)
        guess = f" Did you mean task={close[0]}?" if close else ""
        raise ApaError(f"task={cfg.get('task')} is not a task.{guess} Use one of {', '.join(TASKS)}.")
    check_config(cfg)


def check_resume(cfg: DictConfig) -> None:
    """For a training run that continues a checkpoint: raise ApaError when it cannot (see ``resume_checkpoint``;
    ``task=detect``: ``detection.train.resumable_checkpoint``), before Hydra rewrites the config files of the run
    directory it names. Imports torch only then."""
    if not (cfg.get("resume") or cfg.get("ckpt_path")):
        return
    if cfg.get("task") == "train":
        from apa_lightning.runs.checkpoints import resume_checkpoint

        resume_checkpoint(cfg)
    elif cfg.get("task") == "detect":
        from apa_lightning.detection.train import resumable_checkpoint

        resumable_checkpoint(cfg)


def check_checkpoint_task(cfg: DictConfig) -> None:
    """For ``task=eval`` / ``task=predict``: raise ApaError for a missing checkpoint or input, or (a ``.ckpt``) one
    that is not this tool's or was trained on other images than ``cfg.data`` serves (``trained_checkpoint``), before
    Hydra makes the run directory. Imports torch only for a ``.ckpt``."""
    if cfg.get("task") not in ("eval", "predict"):
        return
    from apa_lightning.runs.checkpoint_lookup import checkpoint_file

    path = checkpoint_file(cfg.get("ckpt_path"), cfg.task)
    if cfg.task == "predict":
        from apa_lightning.tasks.image_files import input_images

        input_images(cfg.get("input"))
        if path.suffix == ".pt":  # a YOLO detector: detection.predict checks it
            return
    from apa_lightning.models.from_checkpoint import trained_checkpoint

    trained_checkpoint(cfg)


class CheckBeforeRun(Callback):
    """Hydra callback: refuses a bad command (``error:`` paragraph, exit status 1) before Hydra makes the run or
    sweep directory. A sweep's trials check their own values when they start."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._refuse_bad(config, check_before_task, check_paths, check_resume, check_checkpoint_task)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._refuse_bad(config, check_paths)

    @staticmethod
    def _refuse_bad(config: DictConfig, *checks: Callable[[DictConfig], None]) -> None:
        try:
            for check in checks:
                check(config)
        except ApaError as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
