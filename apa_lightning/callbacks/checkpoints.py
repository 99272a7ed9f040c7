"""Checkpoints a resume can trust: ``last.ckpt`` is the latest finished epoch, and no file is ever half-written."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from apa_lightning.runs.checkpoints import finished_epochs
from apa_lightning.runs.files import write_atomically


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that refreshes ``last.ckpt`` after every training epoch and numbers epochs from 1.

    Lightning (2.6) rewrites ``last.ckpt`` (``save_last=True``) only when a top-k checkpoint is saved in the same
    step, so with ``save_top_k=1`` on a monitored metric it stays at the best epoch and a resume retrains the epochs
    after it. Here ``save_last=True`` writes ``last.ckpt`` itself, with the trainer's public ``save_checkpoint``, at
    the end of every training epoch (after that epoch's validation and top-k checkpoint), whatever the monitor says.
    An interruption in the middle of an epoch leaves it at the last finished epoch, so a resume repeats exactly the
    unfinished one. (``save_last="link"`` is Lightning's: a link to the newest top-k checkpoint.)
    """

    def __init__(self, *args: Any, save_last: bool | str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, save_last=None if save_last is True else save_last, **kwargs)
        self.last_every_epoch = save_last is True

    @property
    def state_key(self) -> str:
        """Lightning's key, made once: its settings are fixed at construction, and Lightning asks for it at every
        hook call (the profiler's action name), six times a training step."""
        if "_state_key" not in self.__dict__:
            self.__dict__["_state_key"] = super().state_key
        return self.__dict__["_state_key"]

    def format_checkpoint_name(self, metrics: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        """The file name of the checkpoint, its ``{epoch}`` counted from 1 (``epoch005.ckpt`` after the fifth
        epoch) as in metrics.csv, the console lines and the progress bar; Lightning counts from 0."""
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, *args, **kwargs)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.last_every_epoch and not trainer.fast_dev_run:
            # the path is part of the callback's state, which the checkpoint holds: set before writing
            self.last_model_path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
            trainer.save_checkpoint(self.last_model_path, weights_only=self.save_weights_only)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning's, for a run directory that was moved or copied since the checkpoint was written (scratch to
        home): the paths it recorded (last, best and top-k checkpoints) are taken as the same files in the folder
        the checkpoints are in now. Lightning would drop them ("The dirpath has changed"), then write
        ``last-v1.ckpt`` beside ``last.ckpt`` and never again delete the top-k checkpoints of before."""
        then, now = state_dict.get("dirpath"), self.dirpath
        if then and now and then != now:
            state_dict = {**state_dict, "dirpath": now}
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                state_dict[key] = _moved(state_dict.get(key), then, now)
            state_dict["best_k_models"] = {
                _moved(path, then, now): score for path, score in (state_dict.get("best_k_models") or {}).items()
            }
        super().load_state_dict(state_dict)


def _moved(path: str | None, then: str, now: str) -> str | None:
    """``path``, a file in the folder ``then``, as the same file in ``now``; other paths as they are."""
    if path and Path(path).parent == Path(then):
        return str(Path(now) / Path(path).name)
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it, so a kill or a full disk never leaves a
    truncated checkpoint under a real name; a full disk becomes an ApaError naming the file. Folders are made as
    needed, except ``run_dir`` itself: a run directory deleted during the run is not made again, empty, by the
    next checkpoint (the write fails and the run says so)."""

    def __init__(self, run_dir: str | Path | None = None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir).resolve() if run_dir else None
        self.saved_epochs = 0  # the most finished epochs in a checkpoint written in this process

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        if self.run_dir is None or self.run_dir not in path.absolute().parents or self.run_dir.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)

        def write(f: BinaryIO) -> None:
            # serialised in memory first (as Lightning does): torch's zip writer turns a full disk into an opaque
            # RuntimeError, a plain file write raises the OSError that names it
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            f.write(buffer.getbuffer())

        write_atomically(path, write)
        # the epochs the checkpoint holds, as a resume reads them: the run's record counts an epoch as soon as
        # a checkpoint of it is written (a stop between an epoch's top-k checkpoint and its last.ckpt)
        self.saved_epochs = max(self.saved_epochs, finished_epochs(checkpoint))
