"""Reconstruction grids, VAE samples, interpolations, latent scatter plots and latent navigation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import matplotlib
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure
from torch import Tensor

from apa_lightning.callbacks.family import require_model
from apa_lightning.errors import ApaError
from apa_lightning.models.reconstruction import ReconstructionModule
from apa_lightning.models.vae import VAEModule
from apa_lightning.runs.figures import CARD_WIDTH, labelled_grid, save_figure, save_png


def latent_coder(pl_module: L.LightningModule) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]] | None:
    """``(encode, decode)`` between images and dense codes: the module's own (VAEs: posterior means) or its
    network's (``ConvDenseAutoencoder``); None when the model has no dense code."""
    for owner in (pl_module, getattr(pl_module, "net", None)):
        if callable(getattr(owner, "encode", None)) and callable(getattr(owner, "decode", None)):
            return owner.encode, owner.decode
    return None


def class_names(classes: list[str], labels: Tensor) -> list[str]:
    """The names of ``labels`` in ``classes`` (a datamodule's); the numbers themselves where it has none."""
    return [classes[i] if i < len(classes) else str(i) for i in labels.tolist()]


class ImageGrids(L.Callback):
    """Logs image grids to TensorBoard after every validation epoch and after the test, and saves the
    final ones as PNG in ``<run dir>/images``: the same labelled pictures (``figures.labelled_grid``, every
    image drawn at least 64 pixels with nearest neighbour).

    For the autoencoders (``ReconstructionModule``, callbacks/family/reconstruction): ``grid_rows(x)`` (input |
    [noisy input] | reconstruction, by label; the inputs' class names above the columns). VAEs also get a grid of
    samples from the prior, an interpolation between the first two images (its row named by their classes) and,
    when ``latent_dim`` is 2, a scatter of the codes coloured by class, with the class names in the legend. The
    images come from the first batch of the validation (or test) set.

    With ``navigation_steps`` > 0 and a model with a dense code (``latent_coder``) it also draws
    ``latent_navigation``: ``navigation_steps`` x ``navigation_steps`` decodings of the code of collected image
    number ``navigation_image``, its first coordinate varied along the columns and its second along the rows
    (growing rightwards and downwards) by up to ``navigation_span`` standard deviations of that coordinate over
    the collected images' codes; the middle picture is the image's own reconstruction.

    Raises ApaError at setup for a model that is not an autoencoder.
    """

    def __init__(
        self,
        num_images: int = 8,
        num_samples: int = 64,
        interpolation_steps: int = 10,
        navigation_steps: int = 0,
        navigation_span: float = 2.0,
        navigation_image: int = 0,
    ) -> None:
        if navigation_steps < 0 or navigation_span <= 0 or not 0 <= navigation_image < num_images:
            raise ApaError(
                f"callbacks.image_grids: navigation_steps={navigation_steps} must be >= 0 (0: no navigation grid), "
                f"navigation_span={navigation_span} positive and navigation_image={navigation_image} one of the "
                f"num_images={num_images} collected images (0 to {num_images - 1})."
            )
        self.num_images, self.num_samples, self.interpolation_steps = num_images, num_samples, interpolation_steps
        self.navigation_steps, self.navigation_span = navigation_steps, navigation_span
        self.navigation_image = navigation_image
        self._images: Tensor | None = None
        self._image_labels: Tensor | None = None
        self._codes: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._vae = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_model("image_grids", "draws an autoencoder's reconstructions", pl_module, ReconstructionModule)
        self._vae = isinstance(pl_module, VAEModule)
        if not self.navigation_steps:
            return
        coder = latent_coder(pl_module)
        latent_dim = getattr(pl_module, "latent_dim", None) or getattr(getattr(pl_module, "net", None), "latent_dim", 0)
        if coder is None or latent_dim < 2:
            raise ApaError(
                f"callbacks.image_grids.navigation_steps={self.navigation_steps} needs a model with a dense code of "
                f"at least 2 numbers ({type(pl_module.net).__name__} has none); use model=dense_ae or model=vae, "
                "or set callbacks.image_grids.navigation_steps=0."
            )

    def _collect(self, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        x, y = batch
        if batch_idx == 0:
            self._images, self._image_labels = x[: self.num_images].detach(), y[: self.num_images].cpu()
            self._codes, self._labels = [], []
        if self._vae and pl_module.latent_dim == 2:
            with torch.no_grad():
                self._codes.append(pl_module.encode(x).float().cpu())
            self._labels.append(y.cpu())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._collect(pl_module, batch, batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(pl_module, batch, batch_idx)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self._images is not None:
            self._publish(trainer, pl_module, "val", save=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._images is not None:
            self._publish(trainer, pl_module, "val", save=True, log=False)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._images is not None:
            self._publish(trainer, pl_module, "test", save=True)

    @torch.no_grad()
    def grids(self, pl_module: L.LightningModule, names: list[str]) -> dict[str, Tensor]:
        """Named labelled pictures ``(3, H, W)`` in [0, 1] of the collected images, whose class names are
        ``names``."""
        was_training = pl_module.training
        pl_module.eval()
        x = self._images
        rows = [(label, row.float()) for label, row in pl_module.grid_rows(x).items()]
        grids = {"reconstructions": labelled_grid(rows, column_labels=names, readable_at=CARD_WIDTH)}
        if self._vae:
            samples, per_row = pl_module.sample(self.num_samples).float(), max(1, round(self.num_samples**0.5))
            chunks = [("", samples[i : i + per_row]) for i in range(0, len(samples), per_row)]
            title = f"{len(samples)} samples decoded from z ~ N(0, I)"
            grids["samples"] = labelled_grid(chunks, title=title, readable_at=CARD_WIDTH)
        if self._vae and len(x) >= 2:
            path = pl_module.interpolate(x[0], x[1], self.interpolation_steps).float()
            title = "decoded along the line between the codes of the first two images"
            grids["interpolation"] = labelled_grid(
                [(f"{names[0]} → {names[1]}", path)], title=title, readable_at=CARD_WIDTH
            )
        if self.navigation_steps:
            navigation = self.latent_navigation(pl_module, x)
            if navigation is not None:
                navigation = pl_module.to_unit(navigation).clamp(0, 1)
                steps, image = self.navigation_steps, self.navigation_image
                span = torch.linspace(-self.navigation_span, self.navigation_span, steps).tolist()
                offsets = [f"{round(o, 1) + 0.0:+.1f}σ" for o in span]  # + 0.0: no "-0.0"
                title = f"image {image} ({names[image]}): z[0] across, z[1] down, in standard deviations σ"
                grids["latent_navigation"] = labelled_grid(
                    [(f"z[1] {o}", navigation[i * steps : (i + 1) * steps]) for i, o in enumerate(offsets)],
                    title=title,
                    column_labels=offsets,
                    readable_at=CARD_WIDTH,
                )
        pl_module.train(was_training)
        return grids

    def latent_navigation(self, pl_module: L.LightningModule, x: Tensor) -> Tensor | None:
        """The navigation pictures ``(steps * steps, C, H, W)`` as the model decodes them (in its value range), row
        by row; None (with a warning) when fewer images than ``navigation_image + 1`` were collected."""
        if self.navigation_image >= len(x):
            rank_zero_warn(
                f"no latent navigation: only {len(x)} images in the first batch, navigation_image is "
                f"{self.navigation_image}; lower callbacks.image_grids.navigation_image."
            )
            return None
        encode, decode = latent_coder(pl_module)
        codes = encode(x).float()
        spread = codes[:, :2].std(0) if len(codes) > 1 else torch.ones(2, device=codes.device)
        spread = torch.where(spread > 0, spread, torch.ones_like(spread))  # identical codes: unit steps
        offsets = torch.linspace(-self.navigation_span, self.navigation_span, self.navigation_steps)
        offsets = offsets.to(codes.device)
        z = codes[self.navigation_image].repeat(self.navigation_steps**2, 1)
        z[:, 0] += offsets.repeat(self.navigation_steps) * spread[0]  # along each row
        z[:, 1] += offsets.repeat_interleave(self.navigation_steps) * spread[1]  # down the columns
        return decode(z.to(dtype=x.dtype)).float()

    def latent_figure(self, classes: list[str]) -> Figure | None:
        """Scatter of the collected 2-D codes coloured by class, the names ``classes`` in the legend; None when
        no codes were collected."""
        if not self._codes:
            return None
        codes, labels = torch.cat(self._codes).numpy(), torch.cat(self._labels).numpy()
        figure = Figure(figsize=(7, 5))
        ax = figure.add_subplot()
        colours = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
        present = torch.cat(self._labels).unique()
        for label, name in zip(present.tolist(), class_names(classes, present), strict=True):
            chosen = labels == label
            ax.scatter(codes[chosen, 0], codes[chosen, 1], s=6, color=colours(label % colours.N), label=name)
        ax.legend(
            title="class", loc="upper left", bbox_to_anchor=(1.01, 1), markerscale=3, ncols=1 + len(classes) // 25
        )
        ax.set(xlabel="z[0]", ylabel="z[1]", title="Latent space (posterior means)")
        figure.tight_layout()
        return figure

    def _publish(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str, save: bool, log: bool = True):
        classes = list(trainer.datamodule.classes) if trainer.datamodule is not None else []  # None: dataloaders
        grids = self.grids(pl_module, class_names(classes, self._image_labels))
        figure = self.latent_figure(classes)
        if log:
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    for name, grid in grids.items():
                        logger.experiment.add_image(f"{split}/{name}", grid, trainer.global_step)
                    if figure is not None:
                        logger.experiment.add_figure(f"{split}/latent_space", figure, trainer.global_step, close=False)
        if save and trainer.is_global_zero:
            out = Path(trainer.default_root_dir) / "images"
            out.mkdir(parents=True, exist_ok=True)
            for name, grid in grids.items():
                save_png(out / f"{name}.png", grid)
            if figure is not None:
                save_figure(out / "latent_space.png", figure)
