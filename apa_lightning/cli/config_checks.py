"""Checks of the composed config before anything heavy is imported and before Hydra makes the run directory: a bad
value gets one error naming the key and what it accepts, not a library traceback (or empty run directory) later.
Torch-free."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from difflib import get_close_matches
from pathlib import Path
from typing import Any, NamedTuple

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from apa_lightning.errors import ApaError
from apa_lightning.runs.checkpoint_lookup import CHECKPOINT_TASKS, checkpoint_file
from apa_lightning.tasks import TASKS

AUGMENT_ON = ("device", "workers")  # where data.augmentation runs: per batch on the device, or per image
# Lightning's trainer.precision values (and their short forms), and ours: mixed (tasks/precision.py)
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine")
PRECISIONS += ("transformer-engine-float16", "64", "32", "16", "bf16", "mixed")


class Rule(NamedTuple):
    accepts: Callable[[Any], bool]
    allowed: str  # the end of "key must be ..."

    def or_null(self, meaning: str = "") -> Rule:
        """This rule, or null (which means ``meaning``)."""
        return Rule(lambda v: v is None or self.accepts(v), f"{self.allowed}, or null {meaning}".rstrip())


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML's true is no count


def integer(min: int | None = None, note: str = "") -> Rule:
    """An int >= ``min``; ``note`` is added in brackets."""
    allowed = "an integer" + ("" if min is None else f" >= {min}") + (f" ({note})" if note else "")
    return Rule(lambda v: _int(v) and (min is None or v >= min), allowed)


def choice(*options: Any) -> Rule:
    """One of two or more ``options``, of its type too (true is not 1)."""
    words = ["null" if o is None else str(o).lower() if isinstance(o, bool) else str(o) for o in options]
    allowed = f"{', '.join(words[:-1])} or {words[-1]}"
    return Rule(lambda v: any(type(v) is type(o) and v == o for o in options), allowed)


NON_NEGATIVE = Rule(lambda v: (_int(v) or isinstance(v, float)) and v >= 0, "a number >= 0")
PROBABILITY = Rule(lambda v: NON_NEGATIVE.accepts(v) and v < 1, "a number in [0, 1)")
# keys (those with the same rule: separated by spaces) -> what they accept. Keys a config lacks are not checked.
_RULES = {
    "seed callbacks.epoch_seed.seed": integer().or_null("for an unseeded run"),
    "data.split_seed callbacks.font_pictures.seed": integer(),
    "data.shuffle_seed": integer().or_null("for torch's initial seed"),
    "cpu_threads": integer(min=1).or_null("for one per core"),
    "optimized_mode model.scheduler.mode": choice("min", "max"),
    "callbacks.early_stopping.mode callbacks.model_checkpoint.mode": choice("min", "max"),
    "matmul_precision": Rule(choice("highest", "high", "medium").accepts, "highest, high (TF32) or medium (bfloat16)"),
    "trainer.precision": Rule(
        lambda v: v is None or str(v) in PRECISIONS,
        "32-true, 16-mixed, bf16-mixed, mixed (bf16 where the GPU has it, else 16), 16-true, bf16-true, 64-true or "
        "null (32-true)",
    ),
    "trainer.max_epochs": Rule(
        lambda v: _int(v) and v >= -1 and v != 0, "an integer >= 1 (or -1 for no limit)"
    ).or_null(),
    "trainer.min_epochs": integer(min=0).or_null(),
    "trainer.check_val_every_n_epoch": integer(min=1).or_null(),
    "trainer.limit_train_batches trainer.limit_val_batches trainer.limit_test_batches": Rule(
        lambda v: (_int(v) and v >= 0) or (isinstance(v, float) and 0 < v <= 1),
        "a fraction in (0, 1] or a number of batches",
    ).or_null(),
    "trainer.gradient_clip_val": NON_NEGATIVE.or_null("for none"),
    "trainer.benchmark trainer.enable_model_summary": choice(True, False, None),
    "trainer.deterministic": choice(True, False, "warn", None),
    "trainer.log_every_n_steps trainer.accumulate_grad_batches data.batch_size data.num_classes model.net.latent_dim "
    "eda.samples_per_class predict.grid_images callbacks.image_grids.num_images callbacks.image_grids.num_samples "
    "callbacks.image_grids.interpolation_steps": integer(min=1),
    "data.num_workers": integer(min=0, note="0 loads in the main process"),
    "data.image_size model.net.image_size": integer(min=1, note="pixels"),
    "data.val_size data.test_size": integer(min=1, note="images"),
    "data.channels": choice(1, 3),
    "data.augment_on": choice(*AUGMENT_ON),
    "data.on_device data.download data.pin_memory test model.compile model.channels_last model.manual_optimization "
    "model.net.output_batchnorm callbacks.model_checkpoint.auto_insert_metric_name": choice(True, False),
    "model.optimizer.lr": Rule(lambda v: NON_NEGATIVE.accepts(v) and v > 0, "a number > 0 (e.g. 0.001)"),
    "model.optimizer.weight_decay model.scheduler.eta_min callbacks.early_stopping.min_delta": NON_NEGATIVE,
    "model.optimizer.momentum model.label_smoothing model.net.dropout": PROBABILITY,
    "model.net.block_dropout": Rule(
        lambda v: isinstance(v, (list, ListConfig)) and all(map(PROBABILITY.accepts, v)),
        "a list of numbers in [0, 1)",
    ),
    "model.wrong_pixel_threshold": Rule(lambda v: PROBABILITY.accepts(v) and v > 0, "a number in (0, 1)").or_null(),
    "model.scheduler.interval": choice("epoch", "step"),
    "callbacks.model_checkpoint.save_last": choice(True, False, "link"),
    "callbacks.model_checkpoint.save_top_k": integer(min=-1, note="-1: every one"),
    "callbacks.early_stopping.patience": integer(min=0, note="validations"),
    "callbacks.lr_monitor.logging_interval": choice("step", "epoch", None),
    "callbacks.model_summary.depth": integer(min=0, note="levels of layers shown"),
    "callbacks.progress_bar.min_interval_s": Rule(NON_NEGATIVE.accepts, "a number of seconds >= 0"),
    "task_name": Rule(  # one folder of outputs/runs/: no /, not . or .., at most 255 bytes
        lambda v: v is not None and "/" not in str(v) and str(v).strip(".") != "" and len(str(v).encode()) < 256,
        "a folder name (no /, at most 255 bytes)",
    ),
    "predict.top_k": integer(min=1, note="classes listed per image"),
    "predict.samples": integer(min=0, note="0: no samples.png"),
}
RULES = {key: rule for keys, rule in _RULES.items() for key in keys.split()}


def check_config(cfg: DictConfig) -> None:
    """Raise ApaError for the first value in ``cfg`` that ``RULES`` does not accept, or for ``data.on_device=true``
    with settings ``check_on_device`` refuses."""
    for key, (accepts, allowed) in RULES.items():
        parent, _, name = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig) and name in node and not accepts(value := node[name]):
            raise ApaError(f"{key}={'null' if value is None else value} is not allowed: {key} must be {allowed}.")
    data = cfg.get("data")
    if isinstance(data, DictConfig) and data.get("on_device") is True:
        steps = data.get("augmentation")
        augmented = isinstance(steps, DictConfig) and any(step is not None for step in steps.values())
        check_on_device(data.get("num_workers", 0), data.get("augment_on", "device"), augmented)


def check_on_device(num_workers: int, augment_on: str = "device", augmented: bool = False) -> None:
    """Raise ApaError when ``data.on_device=true`` comes with loader workers, or with an augmentation on them, which
    its batches would never pass through. The datamodule calls this too."""
    if num_workers > 0:
        raise ApaError(
            "data.on_device=true draws the batches in the training process, without loader workers: set "
            f"data.num_workers=0 (got {num_workers}) or data.on_device=false."
        )
    if augmented and augment_on == "workers":
        raise ApaError(
            "data.on_device=true with data.augment_on=workers would train without augmentation (no batch passes "
            "through a loader worker): set data.augment_on=device or data.on_device=false."
        )


def check_paths(cfg: DictConfig) -> None:
    """Raise ApaError when ``paths.log_dir`` cannot hold run directories (it is made, as Hydra would, and a file is
    written in it) or a file stands where ``paths.data_dir`` or one of its parents belongs."""
    for key in ("paths.data_dir", "paths.log_dir"):
        if (value := OmegaConf.select(cfg, key)) is None:
            continue
        path = Path(os.path.expanduser(str(value))).absolute()
        existing = next(p for p in (path, *path.parents) if os.path.exists(p))  # no PermissionError (Path: 3.11)
        problem = None if existing.is_dir() else f"{'it' if existing == path else existing} is a file, not a folder"
        if problem is None and key == "paths.log_dir":
            try:
                path.mkdir(parents=True, exist_ok=True)
                tempfile.TemporaryFile(dir=path).close()
            except OSError as exc:
                problem = f"it cannot be written ({exc.strerror or exc})"
        if problem:
            raise ApaError(
                f"{key}={value} cannot be used: {problem}. Set {key} (or APA_ROOT, which holds both data/ and "
                "outputs/) to a writable folder."
            )


def check_before_task(cfg: DictConfig) -> None:
    """Raise ApaError for an unknown ``task`` or a value ``check_config`` refuses."""
    if (task := cfg.get("task")) not in TASKS:
        close = get_close_matches(str(task), list(TASKS), n=1)
        guess = f" Did you mean task={close[0]}?" if close else ""
        raise ApaError(f"task={task} is not a task.{guess} Use one of {', '.join(TASKS)}.")
    check_config(cfg)


def check_checkpoint(cfg: DictConfig) -> None:
    """Raise ApaError when the checkpoint a command names cannot be used: one a training run resumes (checked before
    Hydra rewrites that run directory's config files), or for eval / predict a missing one or input, or a ``.ckpt``
    not of this tool, made with another network than ``cfg.model`` names, or trained on other images than
    ``cfg.data`` serves."""
    task, named = cfg.get("task"), cfg.get("resume") or cfg.get("ckpt_path")
    if task == "train" and named:
        from apa_lightning.runs.checkpoints import resume_checkpoint

        resume_checkpoint(cfg)
    elif task == "detect" and named:
        from apa_lightning.detection.train import resumable_checkpoint

        resumable_checkpoint(cfg)
    elif task in CHECKPOINT_TASKS:
        from apa_lightning.tasks.image_files import input_images

        path = checkpoint_file(cfg.get("ckpt_path"), task)
        if task == "predict":
            input_images(cfg.get("input"))
        if task == "eval" or path.suffix != ".pt":  # predict's .pt is a YOLO detector's: detection.predict checks it
            from apa_lightning.models.from_checkpoint import trained_checkpoint
            from apa_lightning.runs.checkpoints import networks

            made_with, wanted = networks(trained_checkpoint(cfg)[1], cfg)
            if made_with and wanted and made_with != wanted:  # the checkpoint's model would run under this name
                raise ApaError(
                    f"{path} was made with the network {made_with}, but the model config builds {wanted}: task={task} "
                    "takes the model from the checkpoint; drop the model=/experiment= override."
                )


class CheckBeforeRun(Callback):
    """Hydra callback: refuses a bad command (``error:`` paragraph, exit status 1) before Hydra makes the run or
    sweep directory. A sweep's trials check their own values when they start."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # the folder check last: it makes paths.log_dir, which a refused command should not leave behind
        self._refuse_bad(config, check_before_task, check_checkpoint, check_paths)

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
