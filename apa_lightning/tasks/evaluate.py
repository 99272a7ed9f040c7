"""``task=eval``: test a checkpoint on a data config (its own run's by default) in a new run directory."""

from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict

from apa_lightning.models.classifier import ClassifierModule
from apa_lightning.models.from_checkpoint import SavedDataState, load_weights, model_config, trained_checkpoint
from apa_lightning.models.reconstruction import ReconstructionModule
from apa_lightning.runs.checkpoints import finished_epochs
from apa_lightning.runs.record import RunRecord
from apa_lightning.tasks.train import build_run, log_final_hparams, log_summary, prepare_tensorboard, results, seed_run

log = logging.getLogger(__name__)

# each family's callbacks (conf/callbacks/family/<name>.yaml) and the modules it serves
FAMILIES = {"classification": ClassifierModule, "reconstruction": ReconstructionModule}
FAMILY_CALLBACKS = ("classification_report", "image_grids", "font_pictures")


def with_family_callbacks(cfg: DictConfig) -> None:
    """Add the callbacks of ``cfg.model``'s family (report, image grids) when the config chose none: a checkpoint
    evaluated outside its run directory names no model config, which is where the family is chosen in training."""
    if any(name in (cfg.get("callbacks") or {}) for name in FAMILY_CALLBACKS):
        return
    module = get_class(cfg.model._target_)
    family = next((name for name, base in FAMILIES.items() if issubclass(module, base)), None)
    if family is not None:
        text = (files("apa_lightning.conf") / "callbacks" / "family" / f"{family}.yaml").read_text()
        with open_dict(cfg):
            cfg.callbacks = OmegaConf.merge(cfg.get("callbacks") or {}, OmegaConf.create(text))


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
        with_family_callbacks(cfg)
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
