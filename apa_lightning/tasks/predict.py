"""``task=predict``: a trained classifier or autoencoder (``.ckpt``) on an image or a folder of images; a YOLO
detector's ``.pt`` goes to ``detection.predict``."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning import LightningDataModule, LightningModule
from omegaconf import DictConfig, open_dict
from torch import Tensor

from apa_lightning.detection.yolo import device_indices
from apa_lightning.errors import ApaError
from apa_lightning.models.classifier import ClassifierModule
from apa_lightning.models.from_checkpoint import load_weights, model_config, trained_checkpoint, use_saved_data_state
from apa_lightning.models.vae import VAEModule
from apa_lightning.runs.checkpoint_lookup import checkpoint_file
from apa_lightning.runs.figures import labelled_grid, save_png
from apa_lightning.runs.files import write_text_atomically
from apa_lightning.tasks.image_files import input_images, read_image
from apa_lightning.tasks.train import check_accelerator, instantiate_plain


def predict(cfg: DictConfig) -> None:
    """Run the checkpoint ``cfg.ckpt_path`` (a file or a run directory) on ``cfg.input`` into the run directory.

    A ``.pt`` (YOLO) is handed to ``detection.predict.predict``. A classifier writes ``predictions.csv``: file,
    class, probability and the next ``predict.top_k - 1`` classes with theirs, and ``predictions.png`` (the first
    ``predict.grid_images`` as the network reads them, with their classes). An autoencoder writes
    ``reconstructions/<image>.png`` (input | reconstruction) and ``reconstructions.png`` (the first
    ``predict.grid_images``, named); a VAE also ``samples.png`` with ``predict.samples`` images from the prior.
    The images go through in chunks of ``data.batch_size``, each read (``read_image``) at the size and in the
    channels the dataset stores its images in (``stored_input_shape``: CIFAR-10's 32x32 even for a network trained
    at ``data.image_size=224``), moved to the device ``trainer.accelerator`` picks (``predict_device``: a GPU when
    there is one), converted there as in training (the datamodule's ``on_after_batch_transfer``, which resizes them
    to ``data.image_size``) and predicted before the next is read; the results appear only
    once every image went through, so an unreadable one stops the task before anything is in place. Raises
    ApaError for a bad checkpoint, input or data config.
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
    model: LightningModule = instantiate_plain(model_config(checkpoint, path))
    load_weights(model, checkpoint, path)
    device = predict_device(cfg)
    model.to(device).eval()
    classifier = isinstance(model, ClassifierModule)
    if not use_saved_data_state(datamodule, checkpoint, path, classes=True) and (
        classifier or datamodule.normalize != "none"
    ):
        datamodule.prepare_data()
        datamodule.setup("fit")
    run_dir = Path(cfg.paths.output_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    chunks = network_inputs(files, datamodule, cfg.data.batch_size, device)
    shown = cfg.predict.show
    with torch.no_grad():
        if classifier:
            probabilities = torch.cat([model(x).float().softmax(1).cpu() for _, x in chunks])
            table = classification_table(files[:shown], probabilities[:shown], datamodule.classes, cfg.predict.top_k)
            written = [_write_predictions(run_dir, files, probabilities, datamodule.classes, cfg.predict.top_k)]
            shape = stored_input_shape(datamodule)
            n = cfg.predict.grid_images
            written.append(_write_prediction_grid(run_dir, files[:n], probabilities[:n], datamodule.classes, shape))
        else:
            errors: list[float] = []  # each image's mean squared reconstruction error, for the console table
            pairs = _measured(((chunk, model.to_unit(x), _reconstruct(model, x)) for chunk, x in chunks), errors)
            written = _write_reconstructions(run_dir, files, pairs, cfg.predict.grid_images)
            table = reconstruction_table(files[:shown], errors[:shown])
            if isinstance(model, VAEModule) and cfg.predict.samples > 0:
                if cfg.get("seed") is not None:
                    torch.manual_seed(cfg.seed)
                samples = model.sample(cfg.predict.samples).float().clamp(0, 1).cpu()
                rows = [("", row) for row in samples.split(math.ceil(math.sqrt(len(samples))))]
                save_png(run_dir / "samples.png", labelled_grid(rows, title="samples from the prior"))
                written.append(run_dir / "samples.png")
    listing = "".join(f"  {p}\n" for p in written)
    first = f" (the first {shown})" if len(files) > shown else ""
    print(f"\n{len(files)} image(s) through {path}{first}:\n{table}\n\n{listing}Run directory: {run_dir}")


def predict_device(cfg: DictConfig) -> torch.device:
    """The device ``task=predict`` runs the network on: the one Lightning's Trainer picks for ``trainer.accelerator``
    on one device, as a training run does (``auto``: a CUDA or MPS GPU when there is one, else the CPU). Raises
    ApaError when the accelerator asks for a GPU and there is none."""
    check_accelerator(cfg)
    info = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = info.level
    info.setLevel(logging.WARNING)  # not the accelerator lines ("GPU available: ...") of a training run
    try:
        trainer = L.Trainer(
            accelerator=cfg.trainer.get("accelerator") or "auto",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    finally:
        info.setLevel(level)
    device = trainer.strategy.root_device
    if device.type == "cuda":  # the first GPU trainer.devices names ([1], "1,": GPU 1)
        device = torch.device("cuda", device_indices(cfg.trainer.get("devices", "auto"), torch.cuda.device_count())[0])
    return device


def _measured(
    pairs: Iterable[tuple[list[Path], Tensor, Tensor]], errors: list[float]
) -> Iterator[tuple[list[Path], Tensor, Tensor]]:
    """``pairs`` (files, inputs, reconstructions) passed on, each image's mean squared error appended to
    ``errors``."""
    for chunk, inputs, outputs in pairs:
        errors.extend((inputs.float().clamp(0, 1) - outputs).pow(2).flatten(1).mean(1).tolist())
        yield chunk, inputs, outputs


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """``header`` and ``rows`` as left-aligned columns, two spaces apart, each line indented by two."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    )


def classification_table(files: list[Path], probabilities: Tensor, classes: list[str], k: int) -> str:
    """The console's table of predictions: per image its file name, most probable class and probability, and the
    next ``k - 1`` classes with theirs (as ``predictions.csv``, rounded)."""
    top, index = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    rows = [
        [
            file.name,
            classes[i[0]],
            f"{p[0]:.3f}",
            ", ".join(f"{classes[j]} {q:.3f}" for j, q in zip(i[1:], p[1:], strict=True)),
        ]
        for file, p, i in zip(files, top.tolist(), index.tolist(), strict=True)
    ]
    return text_table(["image", "class", "probability", "next"], rows)


def reconstruction_table(files: list[Path], errors: list[float]) -> str:
    """The console's table of reconstructions: per image its file name, mean squared error and PSNR (of pixels in
    [0, 1], as ``test/mse`` and ``test/psnr``)."""
    rows = [
        [file.name, f"{e:.5f}", f"{10 * math.log10(1 / e):.2f}" if e > 0 else "inf"]
        for file, e in zip(files, errors, strict=True)
    ]
    return text_table(["image", "mse", "psnr (dB)"], rows)


def stored_input_shape(datamodule: LightningDataModule) -> tuple[int, int, int]:
    """``(channels, height, width)`` of the uint8 images the datamodule hands to ``on_after_batch_transfer``: as
    its dataset stores them, so that the datamodule converts a photo as it converted the training images.

    The channels are ``stored_channels`` where the datamodule declares it (else ``data.channels``): a grey set
    served as RGB (``data.channels=3``) gets a colour input in grey, repeated to three channels as in training.
    The size is ``stored_size`` where it declares one (CIFAR-10 stores 32x32 images): a network trained at
    ``data.image_size=224`` then gets the photo at 32x32, upsampled by ``float_images`` as its training images
    were, not a sharp 224x224 picture. Else the network's size (``input_shape``, else ``data.image_size``): a
    dataset decoded at that size (Flowers) or never resized (the font)."""
    channels, height, width = getattr(datamodule, "input_shape", None) or (
        datamodule.channels,
        datamodule.image_size,
        datamodule.image_size,
    )
    size = getattr(datamodule, "stored_size", None)
    return getattr(datamodule, "stored_channels", None) or channels, size or height, size or width


def network_inputs(
    files: list[Path], datamodule: LightningDataModule, batch_size: int, device: torch.device | str = "cpu"
) -> Iterator[tuple[list[Path], Tensor]]:
    """The images of ``files`` as the network's input, ``batch_size`` at a time: each chunk's files and their
    float batch (``read_image`` in the stored shape, moved to ``device``, then the
    datamodule's ``on_after_batch_transfer``, as a training batch after its transfer)."""
    channels, height, width = stored_input_shape(datamodule)
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = torch.from_numpy(np.stack([read_image(f, channels, height, width) for f in chunk])).to(device)
        x, _ = datamodule.on_after_batch_transfer((images, torch.zeros(len(images), dtype=torch.long)), 0)
        yield chunk, x


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


def _write_prediction_grid(
    run_dir: Path, files: list[Path], probabilities: Tensor, classes: list[str], shape: tuple[int, int, int]
) -> Path:
    """``predictions.png``: each image as the network reads it (``read_image`` at the stored shape, before the
    datamodule's resizing and normalising), one row each, named with its most probable class and probability, so
    that an input unlike the training images (inverted, cropped away) shows at a glance."""
    best, index = probabilities.max(dim=1)
    rows = [
        (f"{file.name}: {classes[i]} {p:.2f}", torch.from_numpy(read_image(file, *shape)).float().div(255)[None])
        for file, p, i in zip(files, best.tolist(), index.tolist(), strict=True)
    ]
    grid = run_dir / "predictions.png"
    save_png(grid, labelled_grid(rows, title="as the network reads them: predicted class, probability"))
    return grid


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def picture_names(files: list[Path]) -> list[str]:
    """A distinct name (without ``.png``) for each input's picture: its stem; inputs named alike (a.png, a.jpg)
    keep their suffix (``a_png``, ``a_jpg``), and a name taken already gets ``_2``, ``_3``, ..."""
    stems = Counter(f.stem for f in files)
    names: list[str] = []
    taken: set[str] = set()
    for file in files:
        base = file.stem if stems[file.stem] == 1 else f"{file.stem}_{file.suffix.lstrip('.')}"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        names.append(name)
        taken.add(name)
    return names


def _write_reconstructions(
    run_dir: Path, files: list[Path], pairs: Iterable[tuple[list[Path], Tensor, Tensor]], grid_images: int
) -> list[Path]:
    """``reconstructions/<image>.png`` per image (input | reconstruction, exactly the network's pixels) and
    ``reconstructions.png``: the first ``grid_images`` images, one row each, named, drawn large. ``pairs`` gives
    each chunk's files, inputs and reconstructions in [0, 1]; the pictures go into a hidden folder that becomes
    ``reconstructions/`` once every chunk is done (removed when one fails)."""
    names = iter(picture_names(files))
    folder, partial = run_dir / "reconstructions", Path(tempfile.mkdtemp(prefix=".reconstructions-", dir=run_dir))
    partial.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would outlive the rename: the mode mkdir gives
    rows: list[tuple[str, Tensor]] = []
    try:
        for chunk, inputs, reconstructions in pairs:
            inputs, reconstructions = inputs.float().clamp(0, 1).cpu(), reconstructions.cpu()
            for file, image, output in zip(chunk, inputs, reconstructions, strict=True):
                save_png(partial / f"{next(names)}.png", torch.cat([image, output], dim=-1).expand(3, -1, -1))
                if len(rows) < grid_images:
                    rows.append((file.name, torch.stack([image, output])))
        if folder.is_dir():  # a run directory used again (hydra.run.dir=...): its earlier pictures give way
            shutil.rmtree(folder)
        partial.replace(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    grid = run_dir / "reconstructions.png"
    save_png(grid, labelled_grid(rows, title="input | reconstruction", column_labels=["input", "reconstruction"]))
    return [folder, grid]
