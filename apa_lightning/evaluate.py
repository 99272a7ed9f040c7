"""``task=eval``: test a checkpoint on a data config (its own run's by default) in a new run directory."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, open_dict

from apa_lightning.checkpoint_files import finished_epochs
from apa_lightning.errors import ApaError, describe, user_error
from apa_lightning.files import record_failure, run_record, write_metrics
from apa_lightning.run import build_run, log_final_hparams, log_summary, prepare_tensorboard
from apa_lightning.trained_model import SavedDataState, load_weights, model_config, trained_checkpoint

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> None:
    """Test the checkpoint ``cfg.ckpt_path`` on ``cfg.data``'s test split with the run's callbacks and loggers,
    into the run directory: ``metrics.json`` (status, the test metrics, the checkpoint evaluated), the
    classification report or the image grids. The model is the checkpoint's own (class and network from its
    hyperparameters), never ``cfg.model``; the data is normalised with the statistics saved in the checkpoint
    (``data.normalize=dataset``: those of the training split the network was trained on, whatever ``cfg.data``).

    Raises ApaError for a bad checkpoint or a data config that serves other images than the network was trained
    on; a failure once the test has started is recorded in ``metrics.json`` (status ``failed``) and re-raised.
    """
    output_dir = Path(cfg.paths.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    path, checkpoint = trained_checkpoint(cfg)
    log.info("Evaluating %s on %s", path, cfg.data._target_)
    record = {**run_record(cfg, output_dir), "checkpoint": str(path), "best_checkpoint": None, "best_score": None}
    record["epochs"] = finished_epochs(checkpoint)
    start, trainer = time.perf_counter(), None
    try:
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True)
        else:
            os.environ.pop("PL_GLOBAL_SEED", None)
        with open_dict(cfg):
            cfg.model = model_config(checkpoint, path)
        datamodule, model, trainer = build_run(cfg)
        trainer.callbacks.append(SavedDataState(checkpoint, path))  # the normalisation the network was trained with
        prepare_tensorboard(trainer, model, cfg)
        load_weights(model, checkpoint, path)
        trainer.test(model, datamodule=datamodule, verbose=False)  # log_summary shows the metrics
        record["status"] = "interrupted" if trainer.interrupted else "completed"
    except BaseException as exc:
        record_failure(record, exc)
        _save_record(output_dir, record, trainer, start, quiet=True)
        raise
    _save_record(output_dir, record, trainer, start)
    if trainer.is_global_zero:
        log_final_hparams(trainer, cfg, record)
        log_summary(record, tested=str(path))


def _save_record(
    output_dir: Path, record: dict[str, Any], trainer: L.Trainer | None, start: float, quiet: bool = False
) -> None:
    """Add the test metrics and wall time to ``record`` and write ``metrics.json`` (global rank 0). With ``quiet``
    (a failed evaluation) a write error is logged, not raised, so it never hides the original error."""
    metrics = trainer.callback_metrics if trainer is not None else {}
    record["test"] = {k: float(v) for k, v in sorted(metrics.items()) if k.startswith("test/")}
    record["wall_time_s"] = round(time.perf_counter() - start, 2)
    try:
        if trainer is None or trainer.is_global_zero:
            write_metrics(output_dir / "metrics.json", record)
    except (OSError, ValueError, ApaError) as exc:
        if not quiet:
            raise
        log.error("Could not write %s: %s", output_dir / "metrics.json", user_error(exc) or describe(exc))
