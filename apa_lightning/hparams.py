"""A run's hyperparameters as TensorBoard's HParams tab takes them. Torch-free."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def hparams_for_tensorboard(cfg: DictConfig) -> dict[str, Any]:
    """The run's hyperparameters as flat ``section/key`` entries of the types TensorBoard's HParams tab takes:
    the model and data configs, the seed and the epoch budget."""
    flat: dict[str, Any] = {"seed": cfg.get("seed"), "trainer/max_epochs": cfg.trainer.get("max_epochs")}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}/{key}", value)
        else:
            flat[prefix] = node if isinstance(node, (int, float, str, bool)) else str(node)

    for section in ("model", "data"):
        walk(section, OmegaConf.to_container(cfg[section], resolve=True))
    return flat
