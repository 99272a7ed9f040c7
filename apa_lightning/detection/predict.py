"""``task=predict``: run a trained YOLO detector on an image or a folder of images."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from apa_lightning.detection.yolo import YoloDetector, is_yolo_config, setup_ultralytics, ultralytics_device
from apa_lightning.errors import ApaError
from apa_lightning.runs.files import write_atomically, write_text_atomically
from apa_lightning.tasks.image_files import input_images

log = logging.getLogger(__name__)

CSV_COLUMNS = ("file", "class", "confidence", "x1", "y1", "x2", "y2")


def predict(cfg: DictConfig) -> None:
    """Detect objects in ``cfg.input`` with the detector ``cfg.ckpt_path`` (a .pt of a detection run): writes an
    annotated copy of each image into ``<run dir>/predictions/`` and every box into ``<run dir>/predictions.csv``
    (file, class, confidence, x1, y1, x2, y2 in pixels). Thresholds and image size come from ``model.conf``,
    ``model.iou`` and ``model.imgsz``."""
    from PIL import Image

    if not is_yolo_config(cfg.model):
        raise ApaError(
            f"ckpt_path={cfg.get('ckpt_path')} is a YOLO detector's weights (.pt), which task=predict runs with "
            "model=yolo: add model=yolo (or the detection experiment you trained, e.g. experiment=kitti_yolo_scratch); "
            "a classifier or autoencoder predicts from its .ckpt."
        )
    detector: YoloDetector = instantiate(cfg.model, _convert_="all")
    ckpt = Path(cfg.ckpt_path).expanduser().resolve() if cfg.get("ckpt_path") else None
    if ckpt is None or not ckpt.is_file() or ckpt.suffix != ".pt":
        raise ApaError(
            f"ckpt_path={cfg.get('ckpt_path')} is not a YOLO weights file; pass the .pt of a detection run, e.g. "
            "ckpt_path=<run dir>/weights/best.pt."
        )
    images = input_images(cfg.get("input"))
    run_dir = Path(cfg.paths.output_dir).resolve()
    out = run_dir / "predictions"
    out.mkdir(parents=True, exist_ok=True)
    setup_ultralytics(run_dir)
    from ultralytics import YOLO

    model = YOLO(str(ckpt))
    device = ultralytics_device(cfg.trainer.accelerator, cfg.trainer.devices)
    rows = []
    results = model.predict(
        [str(p) for p in images],
        imgsz=detector.imgsz,
        conf=detector.conf,
        iou=detector.iou,
        device=device,
        stream=True,  # one image at a time in memory
        verbose=False,
    )
    for image, result in zip(images, results, strict=True):
        annotated = Image.fromarray(result.plot()[..., ::-1])  # BGR -> RGB
        image_format = Image.registered_extensions()[image.suffix.lower()]
        write_atomically(out / image.name, lambda f, im=annotated, fmt=image_format: im.save(f, format=fmt))
        for (x1, y1, x2, y2), confidence, cls in zip(
            result.boxes.xyxy.tolist(), result.boxes.conf.tolist(), result.boxes.cls.tolist(), strict=True
        ):
            row = (str(image), result.names[int(cls)], f"{confidence:.4f}", *(f"{v:.1f}" for v in (x1, y1, x2, y2)))
            rows.append(row)
    table = run_dir / "predictions.csv"
    text = io.StringIO()
    csv.writer(text).writerows([CSV_COLUMNS, *rows])
    write_text_atomically(table, text.getvalue())
    print(f"\n{len(rows)} boxes in {len(images)} image(s): {table}\nAnnotated images: {out}\nRun directory: {run_dir}")
