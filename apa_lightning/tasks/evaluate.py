"""``task=eval``: test a checkpoint on a data config (its own run's by default) in a new run directory."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, open_dict

from apa_lightning.models.from_checkpoint import SavedDataState, load_weights, model_config, trained_checkpoint
from apa_lightning.runs.checkpoints import finished_epochs
from apa_lightning.runs.record import RunRecord
from apa_lightning.tasks.train import build_run, log_final_hparams, log_summary, prepare_tensorboard, results, seed_run

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
    # the checkpoint's epochs, not the test's
    fixed = {"best_checkpoint": None, "best_score": None, "epochs": finished_epochs(checkpoint)}
    trainer = None
    with RunRecord(
        cfg,
        output_dir,
        results=lambda: {**results(trainer), **fixed},  # the trainer as far as the run got
        write=lambda: trainer is None or trainer.is_global_zero,
        checkpoint=str(path),
    ) as record:
        seed_run(cfg)
        with open_dict(cfg):
            cfg.model = model_config(checkpoint, path)
        datamodule, model, trainer = build_run(cfg)
        # the normalisation the network was trained with; a classifier is refused data of other classes
        classifier = cfg.model._target_.endswith(".ClassifierModule")
        trainer.callbacks.append(SavedDataState(checkpoint, path, same_classes=classifier))
        prepare_tensorboard(trainer, model, cfg)
        load_weights(model, checkpoint, path)
        trainer.test(model, datamodule=datamodule, verbose=False)  # log_summary shows the metrics
        record.close("interrupted" if trainer.interrupted else "completed")
    if trainer.is_global_zero:
        log_final_hparams(trainer, cfg, record.data)
        log_summary(record.data, tested=str(path))
