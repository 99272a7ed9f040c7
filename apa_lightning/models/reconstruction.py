"""What the autoencoder modules share: image-quality metrics and optimisation from config."""

from __future__ import annotations

from torch import Tensor
from torchmetrics import MeanSquaredError, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from apa_lightning.errors import ApaError
from apa_lightning.models.base import FastPathModule
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


class ReconstructionModule(FastPathModule):
    """Base of the autoencoders. Subclasses save ``optimizer`` and ``scheduler`` in their hparams, implement
    ``_step`` (log the split's losses; return the loss and the reconstruction) and ``grid_rows`` for the
    image-grid callback. Images are in ``hparams.value_range`` (default [0, 1]), which must be the one the
    datamodule serves; metrics and pictures see them mapped to [0, 1] (``to_unit``)."""

    def __init__(self, channels_last: bool = False, compile: bool = False) -> None:
        super().__init__(channels_last, compile)
        self.val_metrics = image_quality_metrics("val/")
        self.test_metrics = image_quality_metrics("test/")

    @property
    def main_metric(self) -> str:
        """The metric charted next to the loss in TensorBoard's custom scalars."""
        return "psnr"

    @property
    def value_range(self) -> tuple[float, float]:
        low, high = self.hparams.get("value_range") or (0.0, 1.0)
        return float(low), float(high)

    def to_unit(self, x: Tensor) -> Tensor:
        """Images in ``value_range`` mapped to [0, 1]."""
        low, high = self.value_range
        return x if (low, high) == (0.0, 1.0) else (x - low) / (high - low)

    def setup(self, stage: str) -> None:
        normalize = getattr(self.trainer.datamodule, "normalize", "none")
        if normalize != "none":  # standardised images leave the output's range, and PSNR/SSIM assume it
            raise ApaError(
                f"{type(self).__name__} reconstructs images in {list(self.value_range)}, but data.normalize="
                f"{normalize} standardises them to mean 0 and standard deviation 1, outside that range; add "
                "data.normalize=none to the command."
            )
        served, expected = list(getattr(self.trainer.datamodule, "value_range", (0.0, 1.0))), list(self.value_range)
        if served != expected:
            raise ApaError(
                f"the data is served in {served} (data.value_range) but the model expects {expected} "
                f"(model.value_range); set data.value_range={expected}, or use a model whose output covers "
                f"{served} (model=dense_ae follows data.value_range)."
            )

    def log_quality(self, split: str, reconstruction: Tensor, target: Tensor) -> None:
        """Update and log the split's MSE, PSNR and SSIM (computed over the whole epoch, in [0, 1] units)."""
        metrics = self.val_metrics if split == "val" else self.test_metrics
        metrics.update(self.to_unit(reconstruction), self.to_unit(target))
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

    def grid_rows(self, x: Tensor) -> dict[str, Tensor]:
        """Rows of the reconstruction grid by their labels, each ``(N, C, H, W)`` in [0, 1], starting with
        ``"input": x``."""
        raise NotImplementedError

    def configure_optimizers(self):
        return configure_optimization(self, self.hparams.optimizer, self.hparams.get("scheduler"))
