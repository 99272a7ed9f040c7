"""A run's hyperparameters as TensorBoard's HParams tab takes them (``write_final``, for every training path), and
its config as a Text entry. Torch is imported only by ``hparams_summaries``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from apa_lightning.runs.names import sweep_context

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

INSTANTIATION_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# how the run is executed, not what is learnt
PLUMBING = {"num_workers", "download", "pin_memory", "persistent_workers", "augment_on", "on_device"}
PLUMBING |= {"channels_last", "compile"}
PATH_KEY = re.compile(r"(^|_)(dir|path|file|root)$")  # data_dir, split_dir, alexnet_weights_path, ...


def _plain(value: Any) -> int | float | str | bool:
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def _class_name(target: str) -> str:
    return target.rsplit(".", 1)[-1]


SWEPT = "(swept) "  # before a swept key's name: "(" sorts before every letter, so TensorBoard lists it first


def hparams_for_tensorboard(
    cfg: DictConfig, swept: Sequence[str] = (), choices: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The run's hyperparameters as flat ``section/key`` entries of the types TensorBoard's HParams tab takes.

    First the ``swept`` keys, named ``(swept) <key>`` (``model.optimizer.lr`` -> ``(swept) model/optimizer/lr``;
    a config group such as ``model/optimizer`` or ``experiment`` by its option's name from Hydra's group
    ``choices``), then the seed, the epoch budget and the model and data configs (a swept key is not repeated
    under its plain name). TensorBoard's HParams tab ticks the first five hyperparameters whose values differ
    between the runs of its logdir, in name order: the prefix puts the swept keys there even when other runs
    beside the sweep differ in many constants. An object's ``_target_`` becomes its class name under the
    object's key (``model/optimizer: Adam``); other instantiation keys, paths and data-loading settings
    (``num_workers``, ``download``) are left out.
    """
    flat: dict[str, Any] = {}
    plain = set()
    for key in swept:
        value = (choices or {}).get(key)  # a swept config group by its option's name (model=ae,dae)
        if value is None:
            node = OmegaConf.select(cfg, key.replace("/", "."), default=None)
            value = _class_name(node["_target_"]) if isinstance(node, DictConfig) and "_target_" in node else node
        if value is not None:
            flat[SWEPT + key.replace(".", "/")] = _plain(value)
            plain.add(key.replace(".", "/"))

    def add(key: str, value: Any) -> None:
        if key not in plain:
            flat.setdefault(key, _plain(value))

    add("seed", cfg.get("seed"))
    add("trainer/max_epochs", cfg.trainer.get("max_epochs"))

    def walk(prefix: str, node: Any) -> None:
        if not isinstance(node, dict):
            add(prefix, node)
            return
        if "_target_" in node:
            add(prefix, _class_name(str(node["_target_"])))
        for key, value in node.items():
            if key not in INSTANTIATION_KEYS and key not in PLUMBING and not PATH_KEY.search(key):
                walk(f"{prefix}/{key}", value)

    for section in ("model", "data"):
        walk(section, OmegaConf.to_container(cfg[section], resolve=True))
    return flat


def trial_name(run_dir: Path) -> str:
    """The run's name in the HParams tab's Trial ID column (about 20 characters wide), its differing part first:
    a sweep's job ``<sweep id>/3_lr=0.001`` as ``3_lr=0.001 (<sweep id>)``, another run ``<task>/<run id>`` as
    ``<task>/<run id>``. Unique, as run directories are."""
    if run_dir.parent.parent.name == "multiruns":
        return f"{run_dir.name} ({run_dir.parent.name})"
    return f"{run_dir.parent.name}/{run_dir.name}"


def hparams_summaries(params: dict[str, Any], trial: str) -> list[Any]:
    """The HParams plugin's session start and end summaries of a run, its session group named ``trial``.

    No experiment summary: TensorBoard takes the first one it finds in a logdir as the whole logdir's columns
    (another run's, without this run's swept keys, when several lie there); without any it makes the columns from
    all runs' hyperparameters and marks those whose values differ, which it shows first. Its metric columns are
    then the runs' scalars (``best/val/loss`` first, then ``epoch`` and the ``test/`` metrics)."""
    from tensorboard.plugins.hparams import plugin_data_pb2
    from torch.utils.tensorboard.summary import hparams

    _, start, end = hparams(params, {})
    value = start.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    data.session_start_info.group_name = trial
    value.metadata.plugin_data.content = data.SerializeToString()
    return [start, end]


def write_final(writer: SummaryWriter, cfg: DictConfig, run_dir: Path, best: dict[str, float], step: int) -> None:
    """Write the run's ``best`` scores as ``best/<metric>`` scalars at ``step`` and put the run into TensorBoard's
    HParams tab with them: the swept hyperparameters first (``hparams_for_tensorboard``), the Trial ID naming the
    run by what differs (``trial_name``)."""
    for name, value in best.items():
        writer.add_scalar(f"best/{name}", value, step)
    swept, choices = sweep_context()
    # torch's one private hook here (contract: tests/test_library_contracts.py): the summaries go into the writer's
    # event file, which Lightning closed when fit or test ended; _get_file_writer reopens it. No public API does:
    # SummaryWriter.file_writer is None once closed, SummaryWriter.add_hparams and Lightning's log_hyperparams
    # write the experiment summary that hparams_summaries leaves out (add_hparams into a new sub-run too)
    file_writer = writer._get_file_writer()
    for summary in hparams_summaries(hparams_for_tensorboard(cfg, swept, choices), trial_name(run_dir)):
        file_writer.add_summary(summary)
    writer.flush()


def config_markdown(cfg: DictConfig) -> str:
    """The composed config (resolved) as a Markdown YAML code block, for TensorBoard's Text tab."""
    return f"```yaml\n{OmegaConf.to_yaml(cfg, resolve=True)}```"
