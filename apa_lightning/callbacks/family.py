"""The check every family callback (conf/callbacks/family/) makes at setup: the model is one it can serve."""

from __future__ import annotations

import lightning as L

from apa_lightning.errors import ApaError


def require_model(key: str, does: str, pl_module: L.LightningModule, expected: type[L.LightningModule]) -> None:
    """Raise ApaError naming ``callbacks.<key>`` and how to drop it when ``pl_module`` is no ``expected``."""
    if not isinstance(pl_module, expected):
        raise ApaError(
            f"callbacks.{key} {does}, but the model is {type(pl_module).__name__}; the model config chooses its "
            f"callbacks (callbacks/family): drop this one with callbacks.{key}=null."
        )
