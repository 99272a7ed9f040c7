"""The 5x7 binary font of the course's autoencoder exercise, embedded: no download."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from apa_lightning.data.in_memory import ImageTensorDataset, InMemoryImageDataModule, keep_batch
from apa_lightning.errors import ApaError

# Characters 0x60-0x7F of the classic public-domain 5x7 dot-matrix character set (the table the exercise ships as
# font.h): one value per row, top to bottom, the 5 low bits are the pixels left to right. DEL is the full block.
FONT_ROWS: dict[str, tuple[int, ...]] = {
    "`": (0x04, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00),
    "a": (0x00, 0x0E, 0x01, 0x0D, 0x13, 0x13, 0x0D),
    "b": (0x10, 0x10, 0x10, 0x1C, 0x12, 0x12, 0x1C),
    "c": (0x00, 0x00, 0x00, 0x0E, 0x10, 0x10, 0x0E),
    "d": (0x01, 0x01, 0x01, 0x07, 0x09, 0x09, 0x07),
    "e": (0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0F),
    "f": (0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08),
    "g": (0x0E, 0x11, 0x13, 0x0D, 0x01, 0x01, 0x0E),
    "h": (0x10, 0x10, 0x10, 0x16, 0x19, 0x11, 0x11),
    "i": (0x00, 0x04, 0x00, 0x0C, 0x04, 0x04, 0x0E),
    "j": (0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C),
    "k": (0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12),
    "l": (0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "m": (0x00, 0x00, 0x0A, 0x15, 0x15, 0x11, 0x11),
    "n": (0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11),
    "o": (0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E),
    "p": (0x00, 0x1C, 0x12, 0x12, 0x1C, 0x10, 0x10),
    "q": (0x00, 0x07, 0x09, 0x09, 0x07, 0x01, 0x01),
    "r": (0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10),
    "s": (0x00, 0x00, 0x0F, 0x10, 0x0E, 0x01, 0x1E),
    "t": (0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06),
    "u": (0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D),
    "v": (0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "w": (0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A),
    "x": (0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11),
    "y": (0x00, 0x11, 0x11, 0x0F, 0x01, 0x11, 0x0E),
    "z": (0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F),
    "{": (0x06, 0x08, 0x08, 0x10, 0x08, 0x08, 0x06),
    "|": (0x04, 0x04, 0x04, 0x00, 0x04, 0x04, 0x04),
    "}": (0x0C, 0x02, 0x02, 0x01, 0x02, 0x02, 0x0C),
    "~": (0x08, 0x15, 0x02, 0x00, 0x00, 0x00, 0x00),
    "DEL": (0x1F, 0x1F, 0x1F, 0x1F, 0x1F, 0x1F, 0x1F),
}
GLYPH_HEIGHT, GLYPH_WIDTH = 7, 5
log = logging.getLogger(__name__)


def font_glyphs() -> tuple[Tensor, list[str]]:
    """The 32 glyphs as uint8 ``(32, 1, 7, 5)`` images of 0 and 255, and their characters (0x60 to 0x7F)."""
    bits = torch.tensor([[[(row >> (GLYPH_WIDTH - 1 - c)) & 1 for c in range(GLYPH_WIDTH)] for row in rows]
                         for rows in FONT_ROWS.values()], dtype=torch.uint8)  # fmt: skip
    return bits.unsqueeze(1) * 255, list(FONT_ROWS)


class PassBatches(NamedTuple):
    """A training batch of ``passes`` shuffled passes over a small set: ``images`` ``(P, N, C, H, W)`` and
    ``labels`` ``(P, N)``, each pass in its own random order, to be stepped through in mini-batches of
    ``batch_size`` (the last one of a pass smaller when ``batch_size`` does not divide N). ``inputs``, when the
    data brings its own (the noisy copies of ``FontDataModule(noise_levels=...)``), are the network's inputs
    in the same order, ``images`` the clean targets."""

    images: Tensor
    labels: Tensor
    batch_size: int
    inputs: Tensor | None = None

    def mini_batches(self, inputs: Tensor | None = None):
        """Yields ``(input, target)`` mini-batches pass by pass; ``inputs`` (same shape as ``images``, e.g.
        corrupted copies) default to the data's own ``inputs``, else to the images themselves."""
        if inputs is None:
            inputs = self.images if self.inputs is None else self.inputs
        for pass_inputs, pass_targets in zip(inputs, self.images, strict=True):
            yield from zip(pass_inputs.split(self.batch_size), pass_targets.split(self.batch_size), strict=True)


def training_noise_seed(seed: int) -> int:
    """A seed for the denoising set's training copies, drawn from ``seed`` by numpy's SeedSequence: another stream
    than ``torch.Generator().manual_seed(seed)``, which the test's noisy draws use."""
    return int(np.random.SeedSequence(seed, spawn_key=(1,)).generate_state(1, dtype=np.uint64)[0] >> 1)


class FontDataModule(InMemoryImageDataModule):
    """The 32 glyphs of the 5x7 font (label = index of the character in ``classes``); the same 32 images
    serve train, validation and test, as in the exercise.

    A tiny set would pay Lightning's per-step and per-epoch overhead on every mini-batch, so one training
    batch carries ``passes`` passes over the 32 glyphs (a ``PassBatches``), each pass shuffled on the device
    with a generator seeded by ``shuffle_seed`` and the epoch number; the model steps through its
    mini-batches of ``batch_size`` itself (``model.manual_optimization=true``). One epoch is one such batch:
    the glyphs are seen ``trainer.max_epochs * passes`` times in a run. Validation and test get all 32
    glyphs as one batch.

    With ``noise_levels`` and ``noisy_copies`` the training set is the course's denoising set instead:
    ``noisy_copies`` bit-flipped copies of the 32 glyphs at each level (each bit flipped with that
    probability; level 0 gives clean copies), drawn once at setup from a generator seeded by ``noise_seed``
    and kept for the whole run, each paired with its clean glyph as the target (5 levels x 64 copies x 32
    glyphs = 10,240 samples). A pass then goes over all of them in one shuffled order.
    """

    def __init__(
        self,
        passes: int = 100,
        shuffle_seed: int | None = None,
        image_width: int = GLYPH_WIDTH,
        noise_levels: Sequence[float] = (),
        noisy_copies: int = 0,
        noise_seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if passes < 1:
            raise ApaError(f"data.passes must be at least 1 (passes over the training set per epoch), got {passes}.")
        if noisy_copies < 0 or bool(noise_levels) != (noisy_copies > 0):
            raise ApaError(
                f"data.noise_levels={list(noise_levels)} and data.noisy_copies={noisy_copies} go together: "
                "noisy_copies bit-flipped copies of the glyphs at each level (the course's denoising set: "
                "data.noise_levels=[0,0.05,0.1,0.15,0.2] data.noisy_copies=64), or neither (data.noise_levels=[] "
                "data.noisy_copies=0: the clean glyphs)."
            )
        if any(not 0 <= level <= 1 for level in noise_levels):
            raise ApaError(f"data.noise_levels={list(noise_levels)}: each is a bit-flip probability in [0, 1].")
        if (self.image_size, image_width, self.channels) != (GLYPH_HEIGHT, GLYPH_WIDTH, 1):
            raise ApaError(
                f"data=font has 1-channel glyphs of {GLYPH_HEIGHT} rows and {GLYPH_WIDTH} columns and is never "
                f"resized; keep data.image_size={GLYPH_HEIGHT}, data.image_width={GLYPH_WIDTH} and data.channels=1 "
                f"(got {self.image_size}, {image_width} and {self.channels})."
            )
        if self.on_device:
            raise ApaError("data=font already serves its 32 glyphs as one batch per epoch; drop data.on_device.")
        if self.batch_augmentation is not None:  # on_after_batch_transfer builds passes, it does not augment
            raise ApaError(
                "data=font augments its glyphs per image on the loader only: add data.augment_on=workers to "
                "data.augmentation (or drop the augmentation)."
            )
        self.passes, self.shuffle_seed = passes, shuffle_seed
        self.noise_levels = [float(level) for level in noise_levels]
        self.noisy_copies, self.noise_seed = noisy_copies, noise_seed
        self.noisy_train: tuple[Tensor, Tensor, Tensor] | None = None  # clean targets, labels, noisy inputs

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, GLYPH_HEIGHT, GLYPH_WIDTH)

    def batch_images(self, batch: PassBatches | tuple[Tensor, ...]) -> int:
        """A training batch's passes x images (``PassBatches``); a validation or test batch's images."""
        return batch.images.shape[:2].numel() if isinstance(batch, PassBatches) else len(batch[0])

    @staticmethod
    def glyphs() -> tuple[Tensor, list[str]]:
        """The 32 glyphs as float ``(32, 1, 7, 5)`` images of 0 and 1, and their characters."""
        images, characters = font_glyphs()
        return images.float() / 255, characters

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, self.classes = font_glyphs()
        self._check(images, self.classes)
        glyphs = ImageTensorDataset(images, torch.arange(len(images)))
        self.set_splits(glyphs, glyphs, glyphs)
        if self.noise_levels:
            self.noisy_train = self.noisy_copies_of(images)
            log.info(
                "data=font: training on %d bit-flipped copies of the glyphs (%d at each p of %s), drawn once "
                "(data.noise_seed); a model's own training noise is not added to them.",
                len(self.noisy_train[0]),
                self.noisy_copies,
                self.noise_levels,
            )

    def noisy_copies_of(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """uint8 clean targets, labels and bit-flipped inputs: ``noisy_copies`` copies of ``images`` at each of
        ``noise_levels``, level by level, drawn from a generator seeded by ``noise_seed`` (torch's initial seed
        when null). The generator's seed is derived from ``noise_seed`` (not the number itself), so that the test's
        seeded draws (FontPictures' ``seed``, 0 by default) are never the training copies, whatever the run's seed."""
        seed = torch.initial_seed() if self.noise_seed is None else self.noise_seed
        generator = torch.Generator().manual_seed(training_noise_seed(seed))
        copies = len(self.noise_levels) * self.noisy_copies
        targets = images.repeat(copies, 1, 1, 1)
        levels = torch.tensor(self.noise_levels).repeat_interleave(self.noisy_copies * len(images))
        flip = torch.rand(targets.shape, generator=generator) < levels.view(-1, 1, 1, 1)  # bitflip, one level per copy
        inputs = torch.where(flip, 255 - targets, targets)
        return targets, torch.arange(len(images)).repeat(copies), inputs

    def _whole_set(self, dataset: ImageTensorDataset | None) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not run")
        return DataLoader(dataset, batch_size=len(dataset), collate_fn=keep_batch)

    def train_dataloader(self) -> DataLoader:
        if self.noisy_train is not None:  # one batch of every noisy copy: clean targets, labels, noisy inputs
            return DataLoader([self.noisy_train], batch_size=None)
        return self._whole_set(self.train_set)

    def val_dataloader(self) -> DataLoader:
        return self._whole_set(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._whole_set(self.test_set)

    def pass_order(self, n: int, epoch: int, device: torch.device) -> Tensor:
        """``(passes, n)`` indices, one random permutation of ``range(n)`` per pass, drawn on ``device`` from a
        generator seeded by ``shuffle_seed`` (torch's initial seed when null) and ``epoch``: a resumed run
        draws the same orders as an uninterrupted one."""
        base = torch.initial_seed() if self.shuffle_seed is None else self.shuffle_seed
        generator = torch.Generator(device=device).manual_seed((base * 1_000_003 + epoch) % 2**63)
        return torch.rand(self.passes, n, generator=generator, device=device).argsort(dim=1)

    def on_after_batch_transfer(self, batch: tuple[Tensor, ...], dataloader_idx: int):
        images, labels, *inputs = batch
        images = images.float().div_(255)
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return images, labels
        if trainer.lightning_module.automatic_optimization:
            raise ApaError(
                f"data=font hands the model {self.passes} passes over the glyphs per training batch, which only a "
                "model that steps its optimizer per mini-batch can train on: use model=mlp_ae (or set "
                "model.manual_optimization=true)."
            )
        order = self.pass_order(len(images), trainer.current_epoch, images.device)
        noisy = inputs[0].float().div_(255)[order] if inputs else None
        return PassBatches(images[order], labels[order], self.batch_size, noisy)
