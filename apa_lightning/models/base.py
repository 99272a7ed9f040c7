"""What makes the training modules fast: training logs gathered once per epoch, and the opt-in channels-last
memory format and torch.compile of the network."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

# Module arguments that change how fast the network runs, not what it is: kept out of the checkpoint's
# hyperparameters, so a run resumes with them switched either way.
FAST_PATH_ARGS = ("channels_last", "compile")


def _channels_last_inputs(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: the network's 4-D tensor arguments in channels-last memory format."""
    return tuple(_channels_last(a) for a in args)


def _channels_last(value: Any) -> Any:
    is_image_batch = isinstance(value, Tensor) and value.ndim == 4
    return value.contiguous(memory_format=torch.channels_last) if is_image_batch else value


class FastPathModule(L.LightningModule):
    """Base of the training modules (``self.net`` is the network).

    ``log_training`` logs training values once per epoch instead of at every step. The two switches are off by
    default, since either can change results in the last digits.

    ``channels_last``: the network's 4-D weights and its 4-D inputs in channels-last memory format (faster
    convolutions on GPUs with tensor cores). ``compile``: ``torch.compile`` of the network in place
    (``nn.Module.compile``: the state_dict keys stay the same, so checkpoints load either way) when fit starts.
    ``compile_time_s`` (logged and written to metrics.json) is the wall time from that call through the end of the
    first training step: torch compiles lazily, so it covers the sanity check's validation batches (where the
    evaluation graph compiles) and the first step's forward and backward (the training graph), each with its
    batch's loading and running too.
    """

    def __init__(self, channels_last: bool = False, compile: bool = False) -> None:
        super().__init__()
        self.channels_last, self.compile_net = channels_last, compile
        self.compile_time_s: float | None = None
        self._compile_start: float | None = None
        self._fast_path_ready = False
        self._reset_training_sums()

    def _reset_training_sums(self) -> None:
        self._train_sums: dict[str, Tensor] = {}
        self._train_metric_inputs: list[tuple[Tensor, ...]] = []
        self._train_images, self._train_batches = 0, 0
        self._train_metrics: Any = None
        self._train_prog_bar: tuple[str, ...] = ()

    def log_training(
        self,
        values: dict[str, Tensor],
        batch_size: int,
        metrics: Any = None,
        *,
        metric_inputs: tuple[Tensor, ...] = (),
        prog_bar: tuple[str, ...] = (),
    ) -> None:
        """Log a training step's ``values`` and ``metrics`` (a MetricCollection) as epoch means, the values
        ``self.log(..., on_step=False, on_epoch=True)`` at every step would give: the values' batch-size weighted
        sums (float32) and the step's ``metric_inputs`` (its arguments of ``metrics.update``, detached) stay on the
        device; ``metrics.update`` gets them concatenated and everything goes to ``self.log`` once, at the epoch's
        last batch (also the one where ``trainer.max_steps`` is reached, or the one after which a callback set
        ``should_stop``), so that the callbacks' ``on_train_epoch_end`` sees them; the module's
        ``on_train_epoch_end`` logs any left over. A ``self.log`` call costs about as much CPU time as a small
        network's whole training step, a torchmetrics update a tenth of it."""
        if metrics is not None and not metric_inputs:
            raise TypeError("log_training: metrics need this step's metric_inputs (the arguments of metrics.update)")
        for key, value in values.items():
            value = value.detach().float() * batch_size
            self._train_sums[key] = self._train_sums[key] + value if key in self._train_sums else value
        self._train_metric_inputs.append(tuple(t.detach() for t in metric_inputs))
        self._train_images += batch_size
        self._train_batches += 1
        self._train_metrics, self._train_prog_bar = metrics, prog_bar
        trainer = self._trainer  # None: a step called outside a trainer, where self.log logs nothing either
        if trainer is not None and (
            trainer.is_last_batch or self._train_batches >= trainer.num_training_batches or self._last_step(trainer)
        ):
            self._log_training_means()

    def _last_step(self, trainer: L.Trainer) -> bool:
        """Whether the optimizer step of this batch or of the next few (gradients accumulated over
        ``trainer.accumulate_grad_batches``) reaches ``trainer.max_steps``. Those batches then log again: a mean
        logged several times in an epoch is weighted by its images (``batch_size``), so it stays exact."""
        return self.automatic_optimization and 0 <= trainer.max_steps <= trainer.global_step + 1

    def _log_training_means(self) -> None:
        """``self.log`` the epoch means of the training values gathered since the last call, once."""
        if not self._train_images:
            return
        for key, total in self._train_sums.items():
            mean = total / self._train_images
            prog_bar = key in self._train_prog_bar
            self.log(key, mean, on_step=False, on_epoch=True, prog_bar=prog_bar, batch_size=self._train_images)
        if self._train_metrics is not None:
            self._train_metrics.update(*(torch.cat(parts) for parts in zip(*self._train_metric_inputs, strict=True)))
            self.log_dict(self._train_metrics, on_step=False, on_epoch=True, batch_size=self._train_images)
        self._reset_training_sums()

    def on_train_epoch_start(self) -> None:
        self._reset_training_sums()

    def on_train_epoch_end(self) -> None:
        # a fallback for an epoch that ended without any of the flushes above: its values still reach the
        # checkpoint and early-stopping callbacks and the loggers
        self._log_training_means()

    @property
    def compiling(self) -> bool:
        """Whether torch is compiling the network (``model.compile``: from fit's start through the end of the
        first training step), so that step's time is not training speed (``Throughput`` leaves it out)."""
        return self._compile_start is not None

    def configure_model(self) -> None:
        if self.channels_last and not self._fast_path_ready:
            self.net.to(memory_format=torch.channels_last)
            self.net.register_forward_pre_hook(_channels_last_inputs)
        self._fast_path_ready = True

    def on_fit_start(self) -> None:
        # after the callbacks' on_fit_start, so model_summary.txt is drawn from the network as it is
        if self.compile_net and self.compile_time_s is None:
            self._compile_start = time.perf_counter()
            self.net.compile()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.trainer.should_stop:  # set by a callback in this batch (max_time, a mid-epoch early stop)
            self._log_training_means()
        if self._compile_start is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.compile_time_s = round(time.perf_counter() - self._compile_start, 2)
            self._compile_start = None
            log.info(
                "model.compile=true: %.2f s from compiling the network through the first training step.",
                self.compile_time_s,
            )
