"""The font autoencoder's results: wrong pixels per character, its latent plane, transitions and new glyphs."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import matplotlib
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from apa_lightning.callbacks.image_grids import latent_coder
from apa_lightning.data.font import FontDataModule
from apa_lightning.errors import ApaError
from apa_lightning.metrics.wrong_pixels import wrong_pixels
from apa_lightning.models.autoencoder import AutoencoderModule
from apa_lightning.models.noise import corrupt
from apa_lightning.runs.files import write_atomically, write_text_atomically

# ink black on white; the one-pixel gaps between glyphs (NaN in a mosaic) light blue, so that blank rows and
# columns at a glyph's edge stay visible
GLYPH_COLOURS = matplotlib.colormaps["gray_r"].with_extremes(bad="#9dc3e6")


def glyph_mosaic(images: Tensor, scale: int) -> np.ndarray:
    """Glyphs ``(R, C, H, W)`` in [0, 1] as one array, each upscaled ``scale`` times (nearest neighbour) and
    framed by a one-pixel gap of NaN: shape ``(R * (H * scale + 1) + 1, C * (W * scale + 1) + 1)``."""
    rows, cols, height, width = images.shape
    cells = images.float().cpu().clamp(0, 1).repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    cells = torch.nn.functional.pad(cells, (0, 1, 0, 1), value=float("nan"))
    mosaic = cells.permute(0, 2, 1, 3).reshape(rows * (height * scale + 1), cols * (width * scale + 1))
    return torch.nn.functional.pad(mosaic, (1, 0, 1, 0), value=float("nan")).numpy()


def show_mosaic(ax: Axes, images: Tensor, scale: int, col_labels: Sequence[str], row_labels: Sequence[str]) -> None:
    """Draw ``glyph_mosaic(images)`` on ``ax``, ink black on white, with a label under each column and one left
    of each row."""
    rows, cols, height, width = images.shape
    ax.imshow(glyph_mosaic(images, scale), cmap=GLYPH_COLOURS, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([1 + (width * scale + 1) * (c + 0.5) for c in range(cols)], list(col_labels))
    ax.set_yticks([1 + (height * scale + 1) * (r + 0.5) for r in range(rows)], list(row_labels))
    ax.tick_params(length=0)


class FontPictures(L.Callback):
    """After the test of a model on ``data=font``, writes into the run directory (rank 0) and TensorBoard:

    - ``wrong_pixels.csv``: per character its wrong pixels after thresholding the output at the model's
      ``wrong_pixel_threshold`` (0.5 when unset), its code when the model has one, and for a denoising model the
      mean wrong pixels of the output and of the noisy input over ``noise_draws`` seeded draws at each test
      noise level;
    - ``images/glyphs.png``: every glyph, the output and the thresholded output (a denoising model's of a noisy
      copy at its training noise level, shown too);
    - ``images/transitions.png``: glyphs decoded along the straight line between the codes of each pair of
      ``transitions`` (characters; ``DEL`` names 0x7F), ``transition_steps`` pictures each;
    - for a 2-D code, ``images/latent_plane.png`` (each character drawn at its code) and ``images/latent_grid.png``
      (glyphs decoded from a ``grid_size`` x ``grid_size`` grid over the codes' range, widened by ``margin``).

    Glyphs are upscaled ``scale`` times with nearest neighbour. Writes only the table and ``glyphs.png`` for a
    model without ``encode``/``decode``. Raises ApaError at setup for other data than the font or a model that is
    not an autoencoder (``AutoencoderModule``): data=font chooses this callback (callbacks/family/font).
    """

    def __init__(
        self,
        transitions: Sequence[Sequence[str]] = (("k", "h"), ("w", "u"), ("f", "{"), ("n", "r")),
        transition_steps: int = 9,
        grid_size: int = 15,
        margin: float = 0.1,
        scale: int = 6,
        noise_draws: int = 100,
        seed: int = 0,
    ) -> None:
        if any(len(pair) != 2 for pair in transitions) or transition_steps < 2 or grid_size < 2 or scale < 1:
            raise ApaError(
                f"callbacks.font_pictures: transitions={[list(p) for p in transitions]} must be pairs of characters, "
                f"transition_steps={transition_steps} and grid_size={grid_size} at least 2, scale={scale} at least 1."
            )
        if noise_draws < 1 or margin < 0:
            raise ApaError(
                f"callbacks.font_pictures: noise_draws={noise_draws} must be at least 1 and margin={margin} >= 0."
            )
        self.transitions = [tuple(pair) for pair in transitions]
        self.transition_steps, self.grid_size, self.margin, self.scale = transition_steps, grid_size, margin, scale
        self.noise_draws, self.seed = noise_draws, seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        data, model = type(trainer.datamodule).__name__, type(pl_module).__name__
        if not isinstance(trainer.datamodule, FontDataModule) or not isinstance(pl_module, AutoencoderModule):
            raise ApaError(
                f"callbacks.font_pictures draws an autoencoder's glyphs of data=font, but the data is {data} and the "
                f"model {model}; data=font chooses it (callbacks/family): drop it with "
                "callbacks.font_pictures=null."
            )
        characters = set(trainer.datamodule.glyphs()[1])
        unknown = sorted({c for pair in self.transitions for c in pair} - characters)
        if unknown:
            raise ApaError(
                f"callbacks.font_pictures.transitions names {unknown}, which the font does not have; use characters "
                "of ` a-z { | } ~ and DEL."
            )

    @torch.no_grad()
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: AutoencoderModule) -> None:
        if not trainer.is_global_zero:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            self._write(trainer, pl_module)
        finally:
            pl_module.train(was_training)

    def _write(self, trainer: L.Trainer, pl_module: AutoencoderModule) -> None:
        images, characters = trainer.datamodule.glyphs()
        x = images.to(pl_module.device, pl_module.dtype)
        threshold = pl_module.hparams.get("wrong_pixel_threshold") or 0.5
        output = pl_module(x)
        coder = latent_coder(pl_module)
        codes = coder[0](x) if coder else None
        out = Path(trainer.default_root_dir)
        (out / "images").mkdir(parents=True, exist_ok=True)
        write_text_atomically(out / "wrong_pixels.csv", self.table(pl_module, x, output, codes, characters, threshold))

        noise, noisy = pl_module.noise, None
        if noise:  # a denoising model: show what it makes of a noisy copy at its training level
            noisy = (f"noisy input ({noise['kind']} {noise['level']:g})", pl_module.corrupt(x))
            output = pl_module(noisy[1])
        figures = {"glyphs": self.glyphs_figure(x, noisy, output, characters, threshold)}
        if coder:
            figures["transitions"] = self.transitions_figure(codes, coder[1], characters)
            if codes.shape[1] == 2:
                figures["latent_plane"] = self.latent_plane_figure(codes, characters)
                figures["latent_grid"] = self.latent_grid_figure(codes, coder[1], characters)
        for name, figure in figures.items():
            write_atomically(
                out / "images" / f"{name}.png",
                lambda f, figure=figure: figure.savefig(f, format="png", bbox_inches="tight"),
            )
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_figure(f"test/{name}", figure, trainer.global_step, close=False)

    def table(
        self,
        pl_module: AutoencoderModule,
        x: Tensor,
        output: Tensor,
        codes: Tensor | None,
        characters: list[str],
        threshold: float,
    ) -> str:
        """The CSV text of ``wrong_pixels.csv``."""
        columns = {"character": characters, "codepoint": [f"0x{0x60 + i:02X}" for i in range(len(characters))]}
        columns["wrong_pixels"] = wrong_pixels(output, x, threshold).tolist()
        for d in range(codes.shape[1] if codes is not None else 0):
            columns[f"z{d}"] = [f"{v:.4f}" for v in codes[:, d].tolist()]
        noise = pl_module.noise
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        levels = (pl_module.hparams.get("test_noise_levels") or ()) if noise else ()
        for level in levels:
            noisy = corrupt(x.expand(self.noise_draws, *x.shape).flatten(0, 1), noise["kind"], level, generator)
            denoised = pl_module(noisy)
            clean = x.repeat(self.noise_draws, 1, 1, 1)
            for name, result in (("input_", noisy), ("", denoised)):
                per_glyph = wrong_pixels(result, clean, threshold).view(self.noise_draws, -1).float().mean(0)
                columns[f"noise{level}/{name}mean_wrong_pixels"] = [f"{v:.2f}" for v in per_glyph.tolist()]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(zip(*columns.values(), strict=True))
        return text.getvalue()

    def glyphs_figure(
        self, x: Tensor, noisy: tuple[str, Tensor] | None, output: Tensor, characters: list[str], threshold: float
    ) -> Figure:
        """Two blocks of 16 characters: glyph, [noisy input (named),] output (grey levels), thresholded output."""
        rows = [("glyph", x)] + ([noisy] if noisy is not None else [])
        rows += [("output", output), (f"output ≥ {threshold:g}", (output >= threshold).float())]
        figure = Figure(figsize=(12, 2.2 * len(rows)), layout="constrained")
        half = len(characters) // 2
        for i, part in enumerate((slice(0, half), slice(half, None))):
            ax = figure.add_subplot(2, 1, i + 1)
            block = torch.stack([images[part, 0] for _, images in rows])
            show_mosaic(ax, block, self.scale, characters[part], [name for name, _ in rows])
        figure.suptitle("Glyphs and their reconstructions")
        return figure

    def transitions_figure(self, codes: Tensor, decode, characters: list[str]) -> Figure:
        """One row per pair: decodings at evenly spaced points from the first character's code to the second's."""
        t = torch.linspace(0, 1, self.transition_steps, device=codes.device).unsqueeze(1)
        rows = []
        for a, b in self.transitions:
            za, zb = codes[characters.index(a)], codes[characters.index(b)]
            rows.append(decode((1 - t) * za + t * zb)[:, 0])
        figure = Figure(figsize=(1.0 + 0.8 * self.transition_steps, 1.0 + 1.1 * len(rows)))
        ax = figure.add_subplot()
        labels = [f"{a} → {b}" for a, b in self.transitions]
        show_mosaic(ax, torch.stack(rows), self.scale, [f"{v:.2f}" for v in t.flatten().tolist()], labels)
        ax.set_xlabel("position t on the line from the first code (t=0) to the second (t=1)")
        ax.set_title("Transitions between characters in the latent space")
        figure.tight_layout()
        return figure

    def latent_plane_figure(self, codes: Tensor, characters: list[str]) -> Figure:
        """Each character written at its 2-D code."""
        z = codes.float().cpu().numpy()
        figure = Figure(figsize=(7, 6.5))
        ax = figure.add_subplot()
        ax.scatter(z[:, 0], z[:, 1], s=4, color="tab:red")
        for (z0, z1), character in zip(z, characters, strict=True):
            ax.annotate(character, (z0, z1), xytext=(3, 3), textcoords="offset points", fontsize=13)
        low, high = self._bounds(codes)
        ax.set(xlim=(low[0], high[0]), ylim=(low[1], high[1]), xlabel="z[0]", ylabel="z[1]")
        ax.set_title("Latent plane: each character at its code")
        ax.grid(alpha=0.3)
        figure.tight_layout()
        return figure

    def latent_grid_figure(self, codes: Tensor, decode, characters: list[str]) -> Figure:
        """Glyphs decoded from a regular grid over the codes' range, the highest z[1] on top, with the
        characters' codes marked."""
        low, high = self._bounds(codes)
        z0 = torch.linspace(low[0], high[0], self.grid_size, device=codes.device)
        z1 = torch.linspace(high[1], low[1], self.grid_size, device=codes.device)
        grid = torch.stack(torch.meshgrid(z1, z0, indexing="ij")[::-1], dim=-1).view(-1, 2)
        glyphs = decode(grid.to(codes.dtype))[:, 0]
        glyphs = glyphs.view(self.grid_size, self.grid_size, *glyphs.shape[-2:])
        height, width = glyphs.shape[-2:]
        figure = Figure(figsize=(9, 1 + 8 * (height * self.scale + 1) / (width * self.scale + 1)))
        ax = figure.add_subplot()
        step = (high - low) / (self.grid_size - 1)
        extent = (low[0] - step[0] / 2, high[0] + step[0] / 2, low[1] - step[1] / 2, high[1] + step[1] / 2)
        ax.imshow(
            glyph_mosaic(glyphs, self.scale),
            cmap=GLYPH_COLOURS,
            vmin=0,
            vmax=1,
            interpolation="nearest",
            extent=extent,
            aspect="auto",
        )
        z = codes.float().cpu().numpy()
        for (c0, c1), character in zip(z, characters, strict=True):
            ax.annotate(
                character,
                (c0, c1),
                color="tab:red",
                fontsize=10,
                ha="center",
                va="center",
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
            )
        ax.set(xlabel="z[0]", ylabel="z[1]", title=f"Glyphs decoded from a {self.grid_size}x{self.grid_size} grid")
        figure.tight_layout()
        return figure

    def _bounds(self, codes: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The codes' range, widened by ``margin`` of its width on each side (at least 0.1)."""
        z = codes.float().cpu().numpy()
        low, high = z.min(0), z.max(0)
        pad = np.maximum((high - low) * self.margin, 0.1)
        return low - pad, high + pad
