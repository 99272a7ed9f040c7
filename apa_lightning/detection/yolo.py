"""The YOLO model config, and ultralytics set up to work offline and write only inside a run directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from apa_lightning.errors import ApaError
from apa_lightning.runs.files import write_atomically

# ultralytics' optimizer names (case matters to it); "auto" picks one itself and ignores model.lr
OPTIMIZERS = ("SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp", "auto")
# train arguments that come from elsewhere in our config, so model.train_args must not set them
MAPPED_ARGUMENTS = {
    "data": "data.data_dir",
    "epochs": "trainer.max_epochs",
    "device": "trainer.accelerator / trainer.devices",
    "workers": "data.num_workers",
    "seed": "seed",
    "deterministic": "trainer.deterministic",
    "amp": "trainer.precision",
    "resume": "ckpt_path",
    "project": "paths.output_dir",
    "name": "paths.output_dir",
    "save_dir": "paths.output_dir",
    "imgsz": "model.imgsz",
    "batch": "model.batch",
    "optimizer": "model.optimizer",
    "lr0": "model.lr",
    "momentum": "model.momentum",
    "weight_decay": "model.weight_decay",
    "freeze": "model.freeze",
    "patience": "model.patience",
}
ASSETS_URL = "https://github.com/ultralytics/assets/releases/download/v8.4.0"


class YoloDetector:
    """What ``model=yolo`` configures: an ultralytics architecture (``arch``, a model YAML it ships such as
    ``yolov8n.yaml``), optional starting ``weights`` (a local .pt; None trains from scratch) with the first
    ``freeze`` modules frozen, and the training hyperparameters. ``train_args`` passes any other ultralytics
    train argument (augmentation, warm-up, ...) unchanged."""

    def __init__(
        self,
        arch: str = "yolov8n.yaml",
        weights: str | None = None,
        freeze: int | None = None,
        imgsz: int = 640,
        batch: int = 16,
        optimizer: str = "SGD",
        lr: float = 0.01,
        momentum: float = 0.937,
        weight_decay: float = 0.0005,
        patience: int = 100,
        val_images: int = 4,
        conf: float = 0.25,
        iou: float = 0.7,
        train_args: dict[str, Any] | None = None,
    ) -> None:
        if not str(arch).endswith((".yaml", ".yml")):
            raise ApaError(
                f"model.arch={arch} is not a model YAML (e.g. yolov8n.yaml); starting weights (.pt) go into "
                "model.weights, with model.arch the architecture they were trained with."
            )
        if optimizer not in OPTIMIZERS:
            raise ApaError(
                f"model.optimizer={optimizer} is not one of ultralytics' optimizers: {', '.join(OPTIMIZERS)}."
            )
        clashes = sorted(set(train_args or {}) & set(MAPPED_ARGUMENTS))
        if clashes:
            where = "; ".join(f"{key}: set {MAPPED_ARGUMENTS[key]}" for key in clashes)
            raise ApaError(f"model.train_args sets arguments that come from other config keys ({where}).")
        self.arch, self.weights, self.freeze = arch, weights, freeze
        self.imgsz, self.batch = imgsz, batch
        self.optimizer, self.lr, self.momentum, self.weight_decay = optimizer, lr, momentum, weight_decay
        self.patience, self.val_images, self.conf, self.iou = patience, val_images, conf, iou
        self.train_args = dict(train_args or {})

    def weights_file(self) -> Path | None:
        """The starting weights as an absolute path (None: from scratch). Raises ApaError when the file is not
        on disk, before ultralytics would try GitHub for it."""
        if not self.weights:
            return None
        path = Path(self.weights).expanduser().resolve()
        if not path.is_file():
            raise ApaError(
                f"model.weights={self.weights}: no such file ({path}). Pretrained weights are not downloaded: get "
                f"{path.name} (e.g. {ASSETS_URL}/{path.name}) and put it at {path}, or set model.weights to the "
                "path of a .pt file (e.g. <run dir>/weights/best.pt), or model.weights=null to train from scratch."
            )
        return path

    def train_arguments(self) -> dict[str, Any]:
        """The ultralytics train arguments this config sets."""
        return {
            "imgsz": self.imgsz,
            "batch": self.batch,
            "optimizer": self.optimizer,
            "lr0": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "freeze": self.freeze,
            "patience": self.patience,
            **self.train_args,
        }


def is_yolo_config(model_cfg: Any) -> bool:
    """Whether a model config builds a ``YoloDetector`` (checked before instantiating anything)."""
    return model_cfg.get("_target_") == f"{YoloDetector.__module__}.{YoloDetector.__qualname__}"


def device_indices(devices: Any, count: int) -> list[int]:
    """The GPU indices ``trainer.devices`` names, in Lightning's meaning: "auto" or -1 all, a number n (int or
    "2") the first n, a list or a comma string ("0,1", "1,") those indices. Raises ApaError otherwise."""
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return list(range(count))
        if "," not in text:
            devices = int(text) if text.lstrip("-").isdigit() else devices
        else:
            parts = [part.strip() for part in text.split(",") if part.strip()]
            devices = [int(part) for part in parts] if parts and all(p.isdigit() for p in parts) else devices
    if isinstance(devices, int) and not isinstance(devices, bool):
        if devices == -1:
            return list(range(count))
        if 1 <= devices <= count:
            return list(range(devices))
    elif (
        isinstance(devices, (list, tuple))
        and devices
        and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < count for i in devices)
    ):
        return list(dict.fromkeys(devices))
    raise ApaError(
        f"trainer.devices={devices} cannot be used with {count} visible GPU(s); use auto, -1 (all), a number of "
        "GPUs (e.g. 2), a list of indices (e.g. [0,1]) or a comma string (e.g. '0,1')."
    )


def ultralytics_device(accelerator: str, devices: Any) -> str:
    """ultralytics' ``device`` for our ``trainer.accelerator`` and ``trainer.devices``: "cpu", "mps" or GPU
    indices ("0", "0,1"). Raises ApaError for a GPU request on a machine without CUDA or unusable devices."""
    import torch

    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator in ("cpu", "mps"):
        return accelerator
    if accelerator not in ("gpu", "cuda"):
        raise ApaError(f"trainer.accelerator={accelerator} is not supported for YOLO; use cpu, gpu, mps or auto.")
    count = torch.cuda.device_count()
    if count == 0:
        raise ApaError(f"trainer.accelerator={accelerator} but no CUDA GPU is visible; use trainer=cpu.")
    if not isinstance(devices, (int, str)):
        devices = list(devices)  # a ListConfig
    return ",".join(str(i) for i in device_indices(devices, count))


def ultralytics_amp(precision: Any) -> bool | str:
    """ultralytics' ``amp`` for Lightning's ``trainer.precision``: full precision (32 / 64) off, bf16 variants
    "bf16", 16 variants (fp16) on, ``mixed`` (trainer=gpu) whichever the GPU supports. Raises ApaError for anything
    else."""
    text = "32-true" if precision is None else str(precision).strip().lower()
    if text == "mixed":
        from apa_lightning.tasks.precision import mixed_precision

        text = mixed_precision()
    if text in ("32", "32-true", "64", "64-true"):
        return False
    if text.startswith("bf16"):
        return "bf16"
    if text in ("16", "16-mixed", "16-true"):
        return True
    raise ApaError(
        f"trainer.precision={precision} has no ultralytics counterpart for YOLO; use 32-true (full precision), "
        "16-mixed (fp16 mixed precision) or bf16-mixed."
    )


def amp_check_without_download(model: Any) -> bool:
    """Stands in for ultralytics' ``check_amp``, which compares a prediction of ``yolo26n.pt`` with and without
    AMP and so downloads that model into its ``WEIGHTS_DIR`` (fixed when ultralytics is imported, outside the run
    directory): AMP on accelerators, off on the CPU and MPS (as the original decides before its comparison)."""
    device = next(model.parameters()).device
    return device.type not in ("cpu", "mps")


def setup_ultralytics(run_dir: Path) -> Path:
    """Make ultralytics offline and keep every file it writes inside ``run_dir``: its settings, runs, weights and
    datasets folders, no sync, no integrations, and the plotting font it would otherwise download. Imports
    ultralytics (set up first: it reads ``YOLO_CONFIG_DIR`` when imported) and returns its config folder."""
    os.environ["YOLO_OFFLINE"] = "1"
    if "ultralytics" not in sys.modules:
        os.environ["YOLO_CONFIG_DIR"] = str(run_dir / ".ultralytics")
    import matplotlib
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    # ultralytics' check_font (every dataset check, every label drawn) looks for its fonts in its config folder
    # first, then asks the network (even with YOLO_OFFLINE), and has no setting to skip that: a TTF there under
    # its names keeps it offline. tests/test_library_contracts.py pins that lookup.
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (USER_CONFIG_DIR / name).is_file():
            write_atomically(USER_CONFIG_DIR / name, lambda f: f.write(font.read_bytes()))
    own = run_dir / ".ultralytics"
    SETTINGS.update(
        {
            "sync": False,
            "runs_dir": str(own / "runs"),
            "weights_dir": str(own / "weights"),
            "datasets_dir": str(own / "datasets"),
            **{name: False for name in ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")},
            "vscode_msg": False,
            "openvino_msg": False,
        }
    )
    return USER_CONFIG_DIR
