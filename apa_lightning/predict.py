"""``task=predict``: a trained classifier or autoencoder (``.ckpt``) on an image or a folder of images; a YOLO
detector's ``.pt`` goes to ``detection.predict``."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule, LightningModule
from omegaconf import DictConfig, open_dict
from torch import Tensor

from apa_lightning.checkpoint_source import checkpoint_file
from apa_lightning.errors import ApaError
from apa_lightning.figures import labelled_grid, save_png
from apa_lightning.files import write_text_atomically
from apa_lightning.image_files import input_images, read_image
from apa_lightning.models.classifier import ClassifierModule
from apa_lightning.models.vae import VAEModule
from apa_lightning.run import instantiate_plain
from apa_lightning.trained_model import load_weights, model_config, saved_data_state, trained_checkpoint

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> None:
    """Run the checkpoint ``cfg.ckpt_path`` (a file or a run directory) on ``cfg.input`` into the run directory.

    A ``.pt`` (YOLO) is handed to ``detection.predict.predict``. A classifier writes ``predictions.csv``: file,
    class, probability and the next ``predict.top_k - 1`` classes with theirs. An autoencoder writes
    ``reconstructions/<image>.png`` (input | reconstruction) and ``reconstructions.png`` (the first
    ``predict.grid_images``, named); a VAE also ``samples.png`` with ``predict.samples`` images from the prior.
    Every image is read and converted first (``read_image``, then the datamodule's ``on_after_batch_transfer``), so
    an unreadable one stops the task before anything is written. Raises ApaError for a bad checkpoint, input or
    data config.
    """
    path = checkpoint_file(cfg.get("ckpt_path"), cfg.task)
    if path.suffix == ".pt":
        from apa_lightning.detection.predict import predict as detect

        with open_dict(cfg):
            cfg.ckpt_path = str(path)
        return detect(cfg)
    path, checkpoint = trained_checkpoint(cfg)
    files = input_images(cfg.get("input"))
    datamodule: LightningDataModule = instantiate_plain(cfg.data)
    channels, height, width = getattr(datamodule, "input_shape", None) or (
        datamodule.channels,
        datamodule.image_size,
        datamodule.image_size,
    )
    images = torch.from_numpy(np.stack([read_image(f, channels, height, width) for f in files]))
    model: LightningModule = instantiate_plain(model_config(checkpoint, path))
    load_weights(model, checkpoint, path)
    model.eval()
    classifier = isinstance(model, ClassifierModule)
    _set_data_state(datamodule, checkpoint, path, classes_needed=classifier)
    x, _ = datamodule.on_after_batch_transfer((images, torch.zeros(len(images), dtype=torch.long)), 0)
    run_dir = Path(cfg.paths.output_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        batches = x.split(cfg.data.batch_size)
        if classifier:
            probabilities = torch.cat([model(b).float().softmax(1) for b in batches])
            written = [_write_predictions(run_dir, files, probabilities, datamodule.classes, cfg.predict.top_k)]
        else:
            reconstructions = torch.cat([_reconstruct(model, b) for b in batches])
            written = _write_reconstructions(run_dir, files, model.to_unit(x), reconstructions, cfg.predict.grid_images)
            if isinstance(model, VAEModule) and cfg.predict.samples > 0:
                if cfg.get("seed") is not None:
                    torch.manual_seed(cfg.seed)
                samples = model.sample(cfg.predict.samples).float().clamp(0, 1)
                rows = [("", row) for row in samples.split(math.ceil(math.sqrt(len(samples))))]
                save_png(run_dir / "samples.png", labelled_grid(rows, title="samples from the prior"))
                written.append(run_dir / "samples.png")
    listing = "".join(f"  {p}\n" for p in written)
    print(f"\n{len(files)} image(s) through {path}:\n{listing}Run directory: {run_dir}")


def _set_data_state(datamodule: LightningDataModule, checkpoint: dict, path: Path, classes_needed: bool) -> None:
    """Give ``datamodule`` the class names and normalisation of the checkpoint's run: saved in the checkpoint, or
    else (older checkpoints) computed from the data config's training split, which then must be available."""
    state = saved_data_state(checkpoint)
    if state is not None:
        datamodule.classes, datamodule.mean, datamodule.std = state["classes"], state["mean"], state["std"]
    elif classes_needed or datamodule.normalize != "none":
        log.info(
            "%s holds no class names or normalisation (written before they were saved): reading them from the "
            "training split of %s.",
            path,
            type(datamodule).__name__,
        )
        datamodule.prepare_data()
        datamodule.setup("fit")


def _reconstruct(model: LightningModule, x: Tensor) -> Tensor:
    """Reconstructions in [0, 1] of the clean images ``x``: a VAE decodes the posterior means."""
    output = model.decode(model.encode(x)) if isinstance(model, VAEModule) else model.to_unit(model(x))
    return output.float().clamp(0, 1)


def _write_predictions(run_dir: Path, files: list[Path], probabilities: Tensor, classes: list[str], k: int) -> Path:
    """``predictions.csv``: per image its file, most probable class and probability, then classes 2..k with theirs."""
    k = min(k, probabilities.shape[1])
    if len(classes) != probabilities.shape[1]:
        raise ApaError(
            f"the data config names {len(classes)} classes but the network predicts {probabilities.shape[1]}; pass "
            "the data config the checkpoint was trained with."
        )
    top, index = probabilities.topk(k, dim=1)
    header = ["file", "class", "probability"]
    header += [f"{name}_{rank}" for rank in range(2, k + 1) for name in ("class", "probability")]
    rows = [header]
    for file, values, indices in zip(files, top.tolist(), index.tolist(), strict=True):
        rows.append([str(file), *(v for i, p in zip(indices, values, strict=True) for v in (classes[i], f"{p:.6f}"))])
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    table = run_dir / "predictions.csv"
    write_text_atomically(table, text.getvalue())
    return table


def _write_reconstructions(
    run_dir: Path, files: list[Path], inputs: Tensor, reconstructions: Tensor, grid_images: int
) -> list[Path]:
    """``reconstructions/<image>.png`` per image (input | reconstruction, exactly the network's pixels) and
    ``reconstructions.png``: the first ``grid_images`` images, one row each, named, drawn large."""
    inputs = inputs.float().clamp(0, 1).cpu()
    folder = run_dir / "reconstructions"
    folder.mkdir(exist_ok=True)
    stems = [f.stem for f in files]
    for file, image, output in zip(files, inputs, reconstructions, strict=True):
        # two inputs named alike (a.png, a.jpg) keep their suffix in the name
        name = file.stem if stems.count(file.stem) == 1 else f"{file.stem}_{file.suffix.lstrip('.')}"
        save_png(folder / f"{name}.png", torch.cat([image, output], dim=-1).expand(3, -1, -1))
    shown = min(grid_images, len(files))
    rows = [(files[i].name, torch.stack([inputs[i], reconstructions[i]])) for i in range(shown)]
    grid = run_dir / "reconstructions.png"
    save_png(grid, labelled_grid(rows, title="input | reconstruction", column_labels=["input", "output"]))
    return [folder, grid]
