"""One training run: instantiate from the composed config, fit, test the best checkpoint, write metrics.json."""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from apa_lightning.callbacks.checkpoints import AtomicCheckpointIO
from apa_lightning.callbacks.throughput import Throughput
from apa_lightning.callbacks.torch_threads import TorchThreads, cpu_threads
from apa_lightning.cli.console import quiet_console
from apa_lightning.errors import ApaError
from apa_lightning.runs.checkpoints import resume_checkpoint
from apa_lightning.runs.hparams import config_markdown, write_final
from apa_lightning.runs.lock import RunLock, directory_error, locked, writer_thread_errors_to_log
from apa_lightning.runs.loggers import RunTensorBoardLogger
from apa_lightning.runs.record import RunRecord, read_run_record
from apa_lightning.tasks.distributed import ddp_job_scope, trial_devices, use_job_command_for_ddp_children
from apa_lightning.tasks.precision import apply_matmul_precision, gpu_available, resolved_precision

log = logging.getLogger(__name__)


def instantiate_plain(cfg: DictConfig) -> Any:
    """Instantiate a model or datamodule config whose nested ``_target_`` configs (net, optimizer, transforms)
    reach the constructor as plain dicts: the object builds them itself and its checkpointed hyperparameters
    stay plain values."""
    return instantiate(cfg, _recursive_=False, _convert_="all")


def instantiate_each(cfg: DictConfig | None, group: str) -> list[Any]:
    """Instantiate every entry of a group of named ``_target_`` configs (callbacks, loggers); null entries
    are switched off. Raises ApaError for an entry without ``_target_``."""
    objects = []
    for name, entry in (cfg or {}).items():
        if entry is None:
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise ApaError(f"{group}.{name} has no _target_; give it one, or switch it off with {group}.{name}=null.")
        objects.append(instantiate(entry))
    return objects


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """Path of the best checkpoint so far, or None when no checkpoint callback saved one."""
    path = getattr(trainer.checkpoint_callback, "best_model_path", None)
    return path if path and Path(path).is_file() else None  # named before it is written: a failed save leaves none


def no_checkpoint_reason(trainer: L.Trainer) -> str:
    """Why ``best_checkpoint`` found none after a fit, in the words of the settings that caused it."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return "checkpointing is off"
    if trainer.fast_dev_run:
        return "fast_dev_run saves none"
    if not any(key.startswith("val/") for key in trainer.callback_metrics):
        return (
            f"no epoch was validated (trainer.check_val_every_n_epoch={trainer.check_val_every_n_epoch}, "
            f"trainer.max_epochs={trainer.max_epochs}, trainer.limit_val_batches={trainer.limit_val_batches})"
        )
    if callback.monitor and callback.monitor not in trainer.callback_metrics:
        return f"{callback.monitor} was never logged"
    return (
        f"the checkpoint callback saved none (callbacks.model_checkpoint.save_top_k={callback.save_top_k}, "
        f"every_n_epochs={callback.every_n_epochs})"
    )


def _number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def requeued_checkpoint(cfg: DictConfig, output_dir: Path) -> str | None:
    """In a SLURM job that SLURM requeued (``SLURM_RESTART_COUNT`` >= 1; its run directory is the same, see
    ``cli.main._run_id``): the run's ``last.ckpt`` to continue from, ``"completed"`` when the run had finished,
    None otherwise (a first start, an explicit ``ckpt_path`` / ``resume``, or no finished epoch yet)."""
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) < 1 or cfg.get("ckpt_path") or cfg.get("resume"):
        return None
    metrics, last = output_dir / "metrics.json", output_dir / "checkpoints" / "last.ckpt"
    if metrics.is_file() and read_run_record(metrics).get("status") == "completed":
        return "completed"
    return str(last) if last.is_file() else None


def prepare_tensorboard(trainer: L.Trainer, model: L.LightningModule, cfg: DictConfig) -> None:
    """Before fit: tell the TensorBoard loggers what kind of loss the module logs and its main metric (see
    ``RunTensorBoardLogger``), and log the composed config as the Text entry ``config``."""
    for logger in trainer.loggers:
        if isinstance(logger, RunTensorBoardLogger):
            logger.describe(getattr(model, "loss_kind", None), getattr(model, "main_metric", None))
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text("config", config_markdown(cfg), trainer.global_step)


def log_final_hparams(trainer: L.Trainer, cfg: DictConfig, record: dict[str, Any]) -> None:
    """The run's best validation score and hyperparameters into each TensorBoard logger (``write_final``), when it
    has a score or test metrics."""
    best = {} if record["best_score"] is None else {record["optimized_metric"]: record["best_score"]}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and (best or record["test"]):
            write_final(logger.experiment, cfg, Path(trainer.default_root_dir), best, trainer.global_step)


def _single_gpu_trial(cfg: DictConfig) -> dict[str, Any]:
    """Trainer overrides that put a one-device trial of a sweep on its own GPU when there are several."""
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    count = torch.cuda.device_count()
    if count < 2 or cfg.trainer.get("devices") != 1 or cfg.trainer.get("accelerator") not in ("auto", "gpu", "cuda"):
        return {}
    return {"devices": trial_devices(HydraConfig.get().job.num, count)}


def _speed(trainer: L.Trainer | None) -> dict[str, Any]:
    """``images_per_s`` and ``epoch_time_s`` of the Throughput callback (None without it), and ``compile_time_s``
    with ``model.compile=true``."""
    throughput = next((c for c in trainer.callbacks if isinstance(c, Throughput)), None) if trainer else None
    speed = throughput.summary() if throughput else {"images_per_s": None, "epoch_time_s": None}
    compile_time = getattr(trainer.lightning_module, "compile_time_s", None) if trainer else None
    return {**speed, **({"compile_time_s": compile_time} if compile_time is not None else {})}


def results(trainer: L.Trainer | None) -> dict[str, Any]:
    """What ``metrics.json`` records of a Lightning run (see ``RunRecord``): the best checkpoint and score, the
    finished epochs, the speed and the test metrics."""
    score = getattr(trainer.checkpoint_callback, "best_model_score", None) if trainer else None
    metrics = trainer.callback_metrics if trainer else {}
    saved_epochs = getattr(trainer.strategy.checkpoint_io, "saved_epochs", 0) if trainer else 0  # AtomicCheckpointIO
    return {
        "best_checkpoint": best_checkpoint(trainer) if trainer else None,
        "best_score": None if score is None else _number(score),
        # an interruption while the epoch's checkpoints were written: that epoch counts once a checkpoint holds it
        "epochs": max(trainer.current_epoch, saved_epochs) if trainer else 0,
        **_speed(trainer),
        "test": {k: _number(v) for k, v in sorted(metrics.items()) if k.startswith("test/")},
    }


def seed_run(cfg: DictConfig) -> None:
    """Seed everything from ``cfg.seed``; an unseeded run clears PL_GLOBAL_SEED, which an earlier run in this
    process may have set and the loaders read (``EpochShuffle``)."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    else:
        os.environ.pop("PL_GLOBAL_SEED", None)


def check_accelerator(cfg: DictConfig) -> None:
    """Raises ApaError when ``trainer.accelerator`` asks for a GPU and torch finds none."""
    if str(cfg.trainer.get("accelerator")) in ("gpu", "cuda") and not gpu_available():
        raise ApaError(
            f"trainer.accelerator={cfg.trainer.accelerator} (trainer=gpu) needs a GPU, and torch finds none here "
            "(no CUDA device, or a CPU-only torch build); use trainer=cpu, or trainer=default to take a GPU when "
            "there is one."
        )


def build_run(
    cfg: DictConfig, threads: int | None = None
) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """The datamodule, module and trainer of a training run, built from ``cfg`` as ``python -m apa_lightning``
    builds them (callbacks, loggers, atomic checkpoints, the run-time precision and matmul precision), on
    ``threads`` CPU threads (default: ``cpu_threads(cfg)``)."""
    check_accelerator(cfg)
    apply_matmul_precision(cfg.get("matmul_precision"))
    datamodule: L.LightningDataModule = instantiate_plain(cfg.data)
    model: L.LightningModule = instantiate_plain(cfg.model)
    callbacks = [*instantiate_each(cfg.get("callbacks"), "callbacks"), TorchThreads(threads or cpu_threads(cfg))]
    if cfg.trainer.get("enable_progress_bar") is False:  # +trainer.enable_progress_bar=false: no progress_bar either
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = instantiate_each(cfg.get("logger"), "logger")
    if not loggers:  # ~logger: the learning rate has no logger to go to (metrics.csv still has it), and
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]  # Lightning refuses one
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO(cfg.paths.get("output_dir"))],
        **resolved_precision(cfg.trainer),
        **_single_gpu_trial(cfg),
    )
    return datamodule, model, trainer


def train(cfg: DictConfig) -> float | None:
    """Fit ``cfg.model`` on ``cfg.data`` in a DDP-clean scope (see ``_train``)."""
    quiet_console()  # also for in-process runs (notebooks), which do not start in __main__
    with ddp_job_scope():
        return _train(cfg)


def _train(cfg: DictConfig) -> float | None:
    """Fit ``cfg.model`` on ``cfg.data`` holding the run directory's lock (``RunLock``; the launching process
    only, not the DDP ranks it starts), see ``_locked_train``. Raises ApaError when another run holds it."""
    output_dir = Path(cfg.paths.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    with locked(output_dir) as lock:
        return _locked_train(cfg, output_dir, lock)


def _locked_train(cfg: DictConfig, output_dir: Path, lock: RunLock | None) -> float | None:
    """Fit ``cfg.model`` on ``cfg.data``, test the best checkpoint and write ``metrics.json`` in the run directory.

    Returns the best value of ``cfg.optimized_metric`` seen in validation (None when none was recorded).
    A failure at any point still writes ``metrics.json`` (status ``failed`` or ``interrupted``, with the error);
    finished epochs stay in ``checkpoints/``. A run whose directory is deleted, replaced or made read-only while
    it runs ends with an ApaError naming it (``directory_error``).
    """
    from hydra.core.hydra_config import HydraConfig

    requeued = requeued_checkpoint(cfg, output_dir)
    if requeued == "completed":
        log.info("This requeued SLURM job's run %s had already completed: nothing to do.", output_dir)
        return read_run_record(output_dir / "metrics.json").get("best_score")
    if requeued:
        log.info("SLURM requeued this job: continuing %s from %s.", output_dir, requeued)
        cfg.ckpt_path = requeued
    # a refused resume fails here, before anything of the run it names is written
    ckpt_path = resume_checkpoint(cfg)
    # fixed by the config or the resumed checkpoint, never by the load: the sums of a resumed run stay the same
    threads = cpu_threads(cfg, ckpt_path)
    trainer, fixed = None, {}
    with RunRecord(
        cfg,
        output_dir,
        results=lambda: {**results(trainer), **fixed},  # the trainer and score as far as the run got
        write=lambda: trainer is None or trainer.is_global_zero,
        lost=lambda exc: directory_error(output_dir, exc, lock),
        **({"resumed_from": ckpt_path} if ckpt_path else {}),
        cpu_threads=threads,
    ) as record:
        seed_run(cfg)
        datamodule, model, trainer = build_run(cfg, threads)
        if HydraConfig.initialized():
            use_job_command_for_ddp_children(trainer)
        with writer_thread_errors_to_log():
            prepare_tensorboard(trainer, model, cfg)
            with warnings.catch_warnings():
                if ckpt_path:  # a resume continues its own checkpoints folder: Lightning's warning would say so
                    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
                trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
            fixed = _fast_dev_run_score(trainer, cfg.get("optimized_metric"))
            if cfg.get("test") and not trainer.interrupted:
                best = best_checkpoint(trainer)
                if best is None:
                    log.info("No best checkpoint: %s. Testing the final weights.", no_checkpoint_reason(trainer))
                trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)  # log_summary shows them
            record.close("interrupted" if trainer.interrupted else "completed")
            if trainer.is_global_zero:
                log_final_hparams(trainer, cfg, record.data)
    if trainer.is_global_zero:
        log_summary(record.data)
    best_score = record.data["best_score"]
    return None if best_score is None or math.isnan(best_score) else best_score


def _fast_dev_run_score(trainer: L.Trainer, metric: str | None) -> dict[str, float]:
    """``{"best_score": ...}`` after a fit with ``fast_dev_run`` (``trainer=debug``), which validates one batch and
    saves no checkpoint: that one value of ``metric`` is the best seen, and a sweep (Optuna's) needs a number. Empty
    otherwise (the checkpoint callback tracks the best). Read before the test resets the trainer's metrics."""
    value = trainer.callback_metrics.get(metric) if trainer.fast_dev_run and metric else None
    return {} if value is None else {"best_score": _number(value)}


def log_summary(record: dict[str, Any], tested: str | None = None) -> None:
    """The run's last lines, on the console and in run.log: the test metrics of ``tested`` (default: the best
    checkpoint's name, else the final weights), the best score, and the run directory, relative to the working
    directory when it lies inside it (``metrics.json`` keeps it absolute)."""
    lines = []
    if record["test"]:
        weights = tested or (Path(record["best_checkpoint"]).name if record["best_checkpoint"] else "final weights")
        width = max(len(k) for k in record["test"])
        lines += [f"Test metrics ({weights}):", *(f"  {k:<{width}}  {v:.4f}" for k, v in record["test"].items())]
    if record["best_score"] is not None:
        lines.append(f"Best {record['optimized_metric']}: {record['best_score']:.4f}")
    relative = os.path.relpath(record["run_dir"])
    lines.append(f"Run directory: {record['run_dir'] if relative.startswith('..') else relative}")
    log.info("\n".join(lines))


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The training config as ``python -m apa_lightning`` composes it, for notebooks and tests.

    ``paths.output_dir`` must be given in ``overrides`` (outside a Hydra run there is no run directory).
    """
    from hydra import compose, initialize_config_module

    with initialize_config_module("apa_lightning.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides or [], return_hydra_config=True)
    with open_dict(cfg):
        cfg.task_name = cfg.task_name  # its default comes from the group choices in the hydra node, dropped here
        del cfg["hydra"]
    OmegaConf.resolve(cfg)
    return cfg
