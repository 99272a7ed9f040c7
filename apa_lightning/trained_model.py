"""A trained LightningModule rebuilt from a checkpoint alone: its class and network from the saved (plain)
hyperparameters, its weights from the state dict; and the checks that a data config serves it its images."""

from __future__ import annotations

import importlib
import inspect
import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from apa_lightning.checkpoint_files import read_checkpoint
from apa_lightning.checkpoint_source import INPUT_KEYS, checkpoint_file
from apa_lightning.errors import ApaError

log = logging.getLogger(__name__)

MODULES = (
    "apa_lightning.models.classifier.ClassifierModule",
    "apa_lightning.models.autoencoder.AutoencoderModule",
    "apa_lightning.models.vae.VAEModule",
)


def trained_checkpoint(cfg: DictConfig) -> tuple[Path, dict[str, Any]]:
    """The checkpoint ``cfg.ckpt_path`` names (a run directory: its best one) and its content, for ``cfg.task``.

    Raises ApaError when it is missing, a YOLO detector's ``.pt`` (``task=eval``), not a checkpoint of this tool,
    or trained on other images than ``cfg.data`` serves (``check_data_fits``).
    """
    path = checkpoint_file(cfg.get("ckpt_path"), cfg.task)
    if path.suffix == ".pt":
        raise ApaError(
            f"task={cfg.task} takes the .ckpt of a training run, but {path} is a YOLO detector's weights: a detection "
            "run validates its best.pt itself (metrics.json), and task=predict ckpt_path=<.pt> input=<images> runs it."
        )
    checkpoint = read_checkpoint(path)
    check_data_fits(checkpoint, cfg.data, path)
    return path, checkpoint


def _import(target: str) -> type:
    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def module_target(hparams: dict[str, Any], path: Path) -> str:
    """The LightningModule class (``_target_``) that saved ``hparams``: the one in ``MODULES`` whose constructor
    takes every saved hyperparameter (``save_hyperparameters`` saves them all). Raises ApaError when none or
    several do."""
    matches = [t for t in MODULES if set(hparams) <= set(inspect.signature(_import(t)).parameters)]
    if len(matches) != 1:
        raise ApaError(
            f"{path} was saved by no single module of this tool (its hyperparameters {', '.join(sorted(hparams))} "
            f"fit {len(matches)} of {', '.join(t.rsplit('.', 1)[1] for t in MODULES)}); pass a checkpoint of a "
            "classifier or autoencoder run."
        )
    return matches[0]


def model_config(checkpoint: dict[str, Any], path: Path) -> DictConfig:
    """The model config that rebuilds the checkpoint's module: its class and saved hyperparameters, with
    ``net.pretrained`` off (the weights come from the checkpoint, so no ImageNet file is needed)."""
    hparams = dict(checkpoint["hyper_parameters"])
    net = dict(hparams.get("net") or {})
    if net.get("pretrained"):
        net["pretrained"] = False
    return OmegaConf.create({"_target_": module_target(hparams, path), **hparams, "net": net})


def load_weights(model: L.LightningModule, checkpoint: dict[str, Any], path: Path) -> None:
    """Load the checkpoint's weights into ``model`` (every tensor, same shapes). Raises ApaError otherwise."""
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)]
        raise ApaError(
            f"{path} does not fit the network its hyperparameters describe ({first[0].strip()}); it was written by "
            "another version of the network: pass a checkpoint of this version."
        ) from exc


def check_data_fits(checkpoint: dict[str, Any], data: DictConfig, path: Path) -> None:
    """Raise ApaError when ``data`` serves other images than the checkpoint's run did (``INPUT_KEYS`` that both
    have): the network takes what it was trained on."""
    trained = checkpoint.get("datamodule_hyper_parameters") or {}
    now = OmegaConf.to_container(data, resolve=True)
    for key in INPUT_KEYS:
        if key in trained and key in now and _plain(trained[key]) != _plain(now[key]):
            raise ApaError(
                f"{path} was trained on data.{key}={_plain(trained[key])}, but data.{key}={_plain(now[key])}; the "
                f"network takes the images it was trained on: set data.{key}={_plain(trained[key])}."
            )


def _plain(value: Any) -> Any:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else value


def saved_data_state(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The class names and normalisation the run's datamodule saved (``InMemoryImageDataModule.state_dict``;
    Lightning keeps it under the datamodule's class name), or None for a checkpoint written before they were
    saved."""
    return next(
        (v for v in checkpoint.values() if isinstance(v, dict) and {"classes", "mean", "std"} <= v.keys()), None
    )


def use_saved_data_state(
    datamodule: L.LightningDataModule, checkpoint: dict[str, Any], path: Path, classes: bool = False
) -> bool:
    """Give ``datamodule`` the normalisation the network was trained with: the per-channel mean and std the
    checkpoint's run saved (``data.normalize=dataset``: its training split's, whatever data ``datamodule``
    serves now), and with ``classes`` its class names too. Returns False, changing nothing, for a checkpoint
    written before they were saved; the datamodule then keeps its own (logged when that matters)."""
    state = saved_data_state(checkpoint)
    if state is None:
        if getattr(datamodule, "normalize", "none") != "none" or classes:
            log.info(
                "%s holds no class names or normalisation (written before they were saved): %s takes them from its "
                "data config (data.normalize=dataset: from its own training split).",
                path,
                type(datamodule).__name__,
            )
        return False
    datamodule.mean, datamodule.std = state["mean"], state["std"]
    if classes:
        datamodule.classes = state["classes"]
    return True


class SavedDataState(L.Callback):
    """Applies ``use_saved_data_state`` once the datamodule has set itself up (Lightning calls the datamodule's
    ``setup``, which computes its own statistics, before the callbacks'), so a test normalises as training did."""

    def __init__(self, checkpoint: dict[str, Any], path: Path) -> None:
        self.checkpoint, self.path = checkpoint, path

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.datamodule is not None:
            use_saved_data_state(trainer.datamodule, self.checkpoint, self.path)
