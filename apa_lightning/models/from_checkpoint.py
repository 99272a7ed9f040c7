"""A trained LightningModule rebuilt from a checkpoint alone: its class and network from the saved (plain)
hyperparameters, its weights from the state dict; and the checks that a data config serves it its images."""

from __future__ import annotations

import importlib
import inspect
import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from apa_lightning.errors import ApaError
from apa_lightning.runs.checkpoint_lookup import INPUT_KEYS, checkpoint_file
from apa_lightning.runs.checkpoints import read_checkpoint

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
    check_channels_servable(trained.get("channels"), data, path)
    for key in INPUT_KEYS:
        if key not in trained or key not in data:
            continue
        # each key alone: another of the data config's values may need the Hydra run (split_dir: its directory)
        now = OmegaConf.select(data, key, throw_on_resolution_failure=False)
        now = OmegaConf.to_container(now, resolve=True) if OmegaConf.is_config(now) else now
        if _plain(trained[key]) != _plain(now):
            raise ApaError(
                f"{path} was trained on data.{key}={_plain(trained[key])}, but data.{key}={_plain(now)}; the "
                f"network takes the images it was trained on: set data.{key}={_plain(trained[key])}."
            )


GREY_DATA = "data=digits, mnist, fashion_mnist, notmnist or flowers"


def check_channels_servable(channels: int | None, data: DictConfig, path: Path) -> None:
    """Raise ApaError when the network takes grey images (``channels`` 1) and ``data``'s dataset stores colour ones:
    ``data.channels`` only repeats a grey channel to three, it never turns colour into grey."""
    target = data.get("_target_")
    try:
        stored = getattr(get_class(str(target)), "stored_channels", None) if target else None
    except Exception:  # hydra raises several types for a name it cannot locate; instantiating the data says why
        return
    if channels == 1 and stored == 3:
        name = str(target).rsplit(".", 1)[-1]
        raise ApaError(
            f"{path} holds a network for 1-channel (grey) images, but {name} stores 3-channel (colour) images, and "
            "data.channels cannot make colour images grey (it only repeats a grey channel to three): this network "
            f"cannot be tested on this data. Test it on grey images ({GREY_DATA}), or train a network on this data."
        )


def _class_key(name: str) -> str:
    """A class name as datasets of the same classes share it: torchvision's MNIST ``0 - zero`` is the digits' ``0``."""
    return name.split(" - ", 1)[0].strip().casefold()


def check_same_classes(trained: list[str], now: list[str], path: Path, data_name: str) -> None:
    """Raise ApaError when a classifier trained on the classes ``trained`` would be scored on data whose classes
    (``now``) differ: its test metrics would compare predictions of one set of classes with labels of another."""
    if [_class_key(c) for c in trained] == [_class_key(c) for c in now]:
        return
    shown = 12

    def listing(names: list[str]) -> str:
        return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")

    raise ApaError(
        f"{path} is a classifier of the classes {listing(trained)}, but {data_name} has the classes {listing(now)}: "
        "its test metrics would score one set of classes against labels of another. Test it on data with its own "
        "classes, or see what it makes of these images with task=predict ckpt_path=<it> input=<images>."
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

    def __init__(self, checkpoint: dict[str, Any], path: Path, same_classes: bool = False) -> None:
        self.checkpoint, self.path, self.same_classes = checkpoint, path, same_classes

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """With ``same_classes`` (a classifier's test), raise ApaError when the data's classes are not the ones
        the checkpoint's run saved (``check_same_classes``)."""
        if trainer.datamodule is None:
            return
        state = saved_data_state(self.checkpoint)
        classes = getattr(trainer.datamodule, "classes", None)
        if self.same_classes and state and state.get("classes") and classes:
            check_same_classes(list(state["classes"]), list(classes), self.path, type(trainer.datamodule).__name__)
        use_saved_data_state(trainer.datamodule, self.checkpoint, self.path)
