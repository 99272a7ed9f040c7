"""The model's architecture, layer by layer, written into the run directory."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from apa_lightning.runs.files import write_text_atomically

log = logging.getLogger(__name__)


def input_shape(trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[int, ...] | None:
    """The shape of one input without the batch dimension: the module's ``example_input_array``, else the
    datamodule's ``input_shape``, else its ``(channels, image_size, image_size)``; None when none is known."""
    example = getattr(pl_module, "example_input_array", None)
    if isinstance(example, torch.Tensor):
        return tuple(example.shape[1:])
    datamodule = trainer.datamodule
    if getattr(datamodule, "input_shape", None) is not None:
        return tuple(datamodule.input_shape)
    if hasattr(datamodule, "channels") and hasattr(datamodule, "image_size"):
        return (datamodule.channels, datamodule.image_size, datamodule.image_size)
    return None


def summarize(network: nn.Module, shape: tuple[int, ...], depth: int) -> str:
    """torchinfo's table of ``network`` on one input of ``shape``: each layer to ``depth`` with its output shape,
    parameter count and whether it trains, then the totals. Runs in eval mode without gradients on the
    network's device and dtype, and leaves every submodule in the train/eval mode it was in and the random
    number generators as they were."""
    from torchinfo import summary

    parameter = next(network.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    modes = {module: module.training for module in network.modules()}
    network.eval()
    # a network that draws random numbers (a VAE's sampling) must not shift the run's random streams
    rng_devices = [device] if device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=rng_devices):
            stats = summary(
                network,
                input_size=(1, *shape),
                dtypes=[dtype],
                device=device,
                depth=depth,
                col_names=("output_size", "num_params", "trainable"),
                row_settings=("var_names",),
                mode="eval",
                verbose=0,
            )
    finally:
        for module, training in modes.items():
            module.training = training
    return str(stats)


class ModelSummaryFile(L.Callback):
    """At the start of fit, writes ``<run dir>/model_summary.txt``: the network (the module's ``net``, else the
    module) layer by layer to ``depth`` with output shapes and parameters per layer, and the totals, for an
    input of the datamodule's shape (batch 1), and logs the totals (the console's one line about the model).
    Rank 0 only; written atomically; also logged to TensorBoard as text. When the input shape is unknown or the
    network fails on it, it warns and writes nothing."""

    def __init__(self, depth: int = 3) -> None:
        self.depth = depth

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        shape = input_shape(trainer, pl_module)
        if shape is None:
            rank_zero_warn(
                f"no model_summary.txt: the input shape is unknown ({type(trainer.datamodule).__name__} has no "
                "input_shape, nor channels and image_size, and the model no example_input_array)."
            )
            return
        if not trainer.is_global_zero:
            return
        network = getattr(pl_module, "net", None)
        network = network if isinstance(network, nn.Module) else pl_module
        try:
            table = summarize(network, shape, self.depth)
        except RuntimeError as exc:  # torchinfo's "Failed to run torchinfo": a diagnostic must not end the run
            rank_zero_warn(f"no model_summary.txt: {type(network).__name__} did not run on an input {shape}: {exc}")
            return
        text = f"{type(network).__name__} in {type(pl_module).__name__}, input (1, {', '.join(map(str, shape))})\n"
        text += table + "\n"
        path = Path(trainer.default_root_dir) / "model_summary.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, text)
        total = sum(p.numel() for p in network.parameters())
        trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
        log.info(f"{type(network).__name__}: {total:,} parameters, {trainable:,} trainable; layers in {path.name}")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):  # indented: TensorBoard renders text as Markdown
                logger.experiment.add_text("model_summary", "\n".join("    " + line for line in text.splitlines()))
