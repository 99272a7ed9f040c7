"""What the autoencoder modules share: image-quality metrics and optimisation from config."""

from __future__ import annotations

import lightning as L
from torch import Tensor
from torchmetrics import MeanSquaredError, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from apa_lightning.models.optim import configure_optimization


def image_quality_metrics(prefix: str) -> MetricCollection:
    """MSE, PSNR and SSIM between reconstructions and targets in [0, 1], keys ``<prefix>mse`` etc."""
    return MetricCollection(
        {
            "mse": MeanSquaredError(),
            "psnr": PeakSignalNoiseRatio(data_range=1.0),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
        },
        prefix=prefix,
    )


class ReconstructionModule(L.LightningModule):
    """Base of the autoencoders. Subclasses save ``optimizer`` and ``scheduler`` in their hparams, implement
    ``_step`` (log the split's losses; return the loss and the reconstruction) and ``grid_rows`` for the
    image-grid callback."""

    def __init__(self) -> None:
        super().__init__()
        self.val_metrics = image_quality_metrics("val/")
        self.test_metrics = image_quality_metrics("test/")

    def log_quality(self, split: str, reconstruction: Tensor, target: Tensor) -> None:
        """Update and log the split's MSE, PSNR and SSIM (computed over the whole epoch)."""
        metrics = self.val_metrics if split == "val" else self.test_metrics
        metrics.update(reconstruction, target)
        self.log_dict(metrics, on_step=False, on_epoch=True)

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        _, x_hat = self._step(batch, "val")
        self.log_quality("val", x_hat, batch[0])

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        _, x_hat = self._step(batch, "test")
        self.log_quality("test", x_hat, batch[0])

    def grid_rows(self, x: Tensor) -> list[Tensor]:
        """Rows of the reconstruction grid, each ``(N, C, H, W)`` in [0, 1], starting with ``x``."""
        raise NotImplementedError

    def configure_optimizers(self):
        return configure_optimization(self, self.hparams.optimizer, self.hparams.get("scheduler"))
