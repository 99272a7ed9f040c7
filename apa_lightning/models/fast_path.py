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
    (``nn.Module.compile``: the state_dict keys stay the same, so checkpoints load either way) when fit starts;
    the first training step, which includes compiling its forward and backward, is timed into
    ``compile_time_s``, logged and written to metrics.json.
    """

    def __init__(self, channels_last: bool = False, compile: bool = False) -> None:
        super().__init__()
        self.channels_last, self.compile_net = channels_last, compile
        self.compile_time_s: float | None = None
        self._first_step_start: float | None = None
        self._fast_path_ready = False
        self._train_sums: dict[str, Tensor] = {}
        self._train_images, self._train_batches = 0, 0

    def log_training(
        self, values: dict[str, Tensor], batch_size: int, metrics: Any = None, prog_bar: tuple[str, ...] = ()
    ) -> None:
        """Log a training step's ``values`` (and ``metrics``, a MetricCollection the caller updates) as epoch means,
        the values ``self.log(..., on_step=False, on_epoch=True)`` at every step would give: their batch-size
        weighted sums stay on the device and go to ``self.log`` once, at the epoch's last batch. A ``self.log``
        call costs about as much CPU time as a small network's whole training step."""
        for key, value in values.items():
            value = value.detach() * batch_size
            self._train_sums[key] = self._train_sums[key] + value if key in self._train_sums else value
        self._train_images += batch_size
        self._train_batches += 1
        trainer = self._trainer  # None: a step called outside a trainer, where self.log logs nothing either
        if trainer is None or not (trainer.is_last_batch or self._train_batches >= trainer.num_training_batches):
            return
        means = {key: total / self._train_images for key, total in self._train_sums.items()}
        for key, mean in means.items():
            self.log(key, mean, on_step=False, on_epoch=True, prog_bar=key in prog_bar, batch_size=self._train_images)
        if metrics is not None:
            self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=self._train_images)

    def on_train_epoch_start(self) -> None:
        self._train_sums, self._train_images, self._train_batches = {}, 0, 0

    def configure_model(self) -> None:
        if self.channels_last and not self._fast_path_ready:
            self.net.to(memory_format=torch.channels_last)
            self.net.register_forward_pre_hook(_channels_last_inputs)
        self._fast_path_ready = True

    def on_fit_start(self) -> None:
        # after the callbacks' on_fit_start, so model_summary.txt is drawn from the network as it is
        if self.compile_net and self.compile_time_s is None:
            self.net.compile()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.compile_net and self.compile_time_s is None:
            self._first_step_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._first_step_start is not None:
            self.compile_time_s = round(time.perf_counter() - self._first_step_start, 2)
            self._first_step_start = None
            log.info(
                "model.compile=true: the first training step took %.2f s, compiling included.", self.compile_time_s
            )
