"""A run's hyperparameters as TensorBoard's HParams tab takes them, and its config as a Text entry. Torch is
imported only by ``hparams_summaries``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

INSTANTIATION_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# how the run is executed, not what is learnt
PLUMBING = {"num_workers", "download", "pin_memory", "persistent_workers", "augment_on", "on_device"}
PLUMBING |= {"channels_last", "compile"}
PATH_KEY = re.compile(r"(^|_)(dir|path|file|root)$")  # data_dir, split_dir, alexnet_weights_path, ...


def _plain(value: Any) -> int | float | str | bool:
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def _class_name(target: str) -> str:
    return target.rsplit(".", 1)[-1]


def hparams_for_tensorboard(
    cfg: DictConfig, swept: Sequence[str] = (), choices: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The run's hyperparameters as flat ``section/key`` entries of the types TensorBoard's HParams tab takes.

    First the ``swept`` keys (``model.optimizer.lr`` -> ``model/optimizer/lr``; a config group such as
    ``model/optimizer`` or ``experiment`` by its option's name from Hydra's group ``choices``), so the tab shows what a
    sweep varies; then the seed, the epoch budget and the model and data configs. An object's ``_target_``
    becomes its class name under the object's key (``model/optimizer: Adam``); other instantiation keys, paths
    and data-loading settings (``num_workers``, ``download``) are left out.
    """
    flat: dict[str, Any] = {}
    for key in swept:
        value = (choices or {}).get(key)  # a swept config group by its option's name (model=ae,dae)
        if value is None:
            node = OmegaConf.select(cfg, key.replace("/", "."), default=None)
            value = _class_name(node["_target_"]) if isinstance(node, DictConfig) and "_target_" in node else node
        if value is not None:
            flat[key.replace(".", "/")] = _plain(value)
    flat.setdefault("seed", _plain(cfg.get("seed")))
    flat.setdefault("trainer/max_epochs", _plain(cfg.trainer.get("max_epochs")))

    def walk(prefix: str, node: Any) -> None:
        if not isinstance(node, dict):
            flat.setdefault(prefix, _plain(node))
            return
        if "_target_" in node:
            flat.setdefault(prefix, _class_name(str(node["_target_"])))
        for key, value in node.items():
            if key not in INSTANTIATION_KEYS and key not in PLUMBING and not PATH_KEY.search(key):
                walk(f"{prefix}/{key}", value)

    for section in ("model", "data"):
        walk(section, OmegaConf.to_container(cfg[section], resolve=True))
    return flat


def hparams_summaries(params: dict[str, Any], metrics: dict[str, float], swept: Sequence[str] = ()) -> list[Any]:
    """The HParams plugin's three summaries of a run (experiment, session start, session end), with the ``swept``
    keys marked as differing: TensorBoard's HParams tab orders its columns differing first, then by name (without
    the mark, the alphabetically first ``data/...`` columns push the swept ones out of view)."""
    from tensorboard.plugins.hparams import plugin_data_pb2
    from torch.utils.tensorboard.summary import hparams

    experiment, start, end = hparams(params, metrics)
    value = experiment.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    names = {key.replace(".", "/") for key in swept}
    for info in data.experiment.hparam_infos:
        info.differs = info.name in names
    value.metadata.plugin_data.content = data.SerializeToString()
    return [experiment, start, end]


def config_markdown(cfg: DictConfig) -> str:
    """The composed config (resolved) as a Markdown YAML code block, for TensorBoard's Text tab."""
    return f"```yaml\n{OmegaConf.to_yaml(cfg, resolve=True)}```"
