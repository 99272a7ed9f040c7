"""KITTI object detection (``training/image_2``, ``training/label_2``) converted once into the YOLO layout."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from apa_lightning.errors import ApaError, describe
from apa_lightning.runs.files import write_text_atomically

log = logging.getLogger(__name__)

KITTI_FIELDS = "type truncated occluded alpha left top right bottom height width length x y z rotation_y"
KITTI_URL = "https://www.cvlibs.net/datasets/kitti/eval_object.php?obj_benchmark=2d"
SPLITS = ("train", "val")
STAMP = "conversion.json"  # written last: a folder without it (or with another fingerprint) is converted again


@dataclass(frozen=True)
class KittiObject:
    """The fields of one ``label_2`` line the conversion uses (pixels for the box)."""

    kind: str
    truncated: float
    occluded: int
    left: float
    top: float
    right: float
    bottom: float


def read_label_file(path: Path) -> list[KittiObject]:
    """The objects of one KITTI label file. Raises ApaError naming the file and line of a malformed line: not
    text, not 15 fields, a field that is no number, or a box, truncation or occlusion that is not finite."""
    data = path.read_bytes()
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ApaError(
            f"{path}, line {line}: not text (byte {exc.start} is not UTF-8); the file is damaged or not a KITTI "
            "label file. Replace it with the original from KITTI's training labels (data_object_label_2.zip)."
        ) from None
    objects = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) not in (15, 16):  # 16: a results file with a score at the end
                raise ValueError(f"{len(fields)} fields instead of 15")
            truncated, occluded, _, left, top, right, bottom, *_ = (float(v) for v in fields[1:])
            if not all(math.isfinite(v) for v in (truncated, occluded, left, top, right, bottom)):
                raise ValueError("truncated, occluded and the box must be finite numbers")
        except ValueError as exc:
            raise ApaError(
                f"{path}, line {number}: not a KITTI label line ({exc}): {line.strip()!r}. Each line needs 15 "
                f"space-separated fields: {KITTI_FIELDS}. Fix or remove the line, then run again."
            ) from None
        objects.append(KittiObject(fields[0], truncated, int(occluded), left, top, right, bottom))
    return objects


def yolo_lines(
    objects: list[KittiObject],
    width: int,
    height: int,
    class_ids: dict[str, int],
    max_truncation: float | None = None,
    max_occlusion: int | None = None,
    min_height: float = 0.0,
) -> list[str]:
    """YOLO label lines (``class x_centre y_centre width height``, normalised) of the kept objects.

    Objects of unmapped types (``DontCare`` always) or outside the truncation / occlusion limits are dropped;
    boxes are clipped to the image, then dropped when empty or lower than ``min_height`` pixels.
    """
    lines = []
    for obj in objects:
        if obj.kind == "DontCare" or obj.kind not in class_ids:
            continue
        if max_truncation is not None and obj.truncated > max_truncation:
            continue
        if max_occlusion is not None and obj.occluded > max_occlusion:
            continue
        left, right = min(max(obj.left, 0.0), width), min(max(obj.right, 0.0), width)
        top, bottom = min(max(obj.top, 0.0), height), min(max(obj.bottom, 0.0), height)
        if right <= left or bottom <= top or bottom - top < min_height:
            continue
        x, y = (left + right) / 2 / width, (top + bottom) / 2 / height
        w, h = (right - left) / width, (bottom - top) / height
        lines.append(f"{class_ids[obj.kind]} {x:.6f} {y:.6f} {w:.6f} {h:.6f}")
    return lines


def _absolute(root: Path, entry: str | list[str]) -> str | list[str]:
    if isinstance(entry, list):
        return [str((root / e).resolve()) for e in entry]
    return str((root / entry).resolve())


class KittiDetectionData:
    """The detection data of a run: a KITTI object-detection folder converted into the YOLO layout, or a
    folder already in that layout.

    ``classes`` maps KITTI object types to class names (several types may share a name; ids follow the order
    of first appearance). ``prepare`` converts when needed and returns the data.yaml ultralytics trains on.
    """

    def __init__(
        self,
        data_dir: str,
        classes: dict[str, str],
        yolo_dir: str | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 42,
        only_with_objects: bool = False,
        max_truncation: float | None = None,
        max_occlusion: int | None = None,
        min_height: float = 0.0,
        batch_size: int = 16,
        num_workers: int = 4,
    ) -> None:
        if not 0 < val_fraction < 1:
            raise ApaError(f"data.val_fraction={val_fraction} must lie between 0 and 1 (e.g. 0.2).")
        if not classes:
            raise ApaError("data.classes is empty; map at least one KITTI type to a class, e.g. data/classes=car.")
        if "DontCare" in classes:
            raise ApaError("data.classes maps DontCare, which marks unlabelled regions; remove it from the mapping.")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.yolo_dir = Path(yolo_dir).expanduser().resolve() if yolo_dir else self.data_dir / "yolo"
        self.classes = dict(classes)
        self.names = list(dict.fromkeys(self.classes.values()))
        self.val_fraction, self.split_seed, self.only_with_objects = val_fraction, split_seed, only_with_objects
        self.max_truncation, self.max_occlusion, self.min_height = max_truncation, max_occlusion, min_height
        self.batch_size, self.num_workers = batch_size, num_workers

    @property
    def image_dir(self) -> Path:
        return self.data_dir / "training" / "image_2"

    @property
    def label_dir(self) -> Path:
        return self.data_dir / "training" / "label_2"

    def prepare(self, run_dir: Path) -> Path:
        """Convert KITTI when the YOLO folder is missing or was made from other files or settings, then write
        ``<run_dir>/data.yaml`` with absolute paths and return it. Raises ApaError when ``data_dir`` holds
        neither KITTI nor a YOLO dataset."""
        if self.image_dir.is_dir():
            source = self._convert_if_changed()
        elif (self.data_dir / "data.yaml").is_file():
            source = self.data_dir / "data.yaml"
            log.info("%s is a YOLO dataset: used as it is (data.classes does not apply).", self.data_dir)
        else:
            raise ApaError(
                f"data.data_dir={self.data_dir} holds neither KITTI object detection (training/image_2/*.png and "
                f"training/label_2/*.txt) nor a YOLO dataset (a data.yaml). Download the left colour images and the "
                f"training labels from {KITTI_URL} and unzip both there, or point data.data_dir at the right folder."
            )
        spec = self._resolved_yaml(source)
        target = Path(run_dir) / "data.yaml"
        write_text_atomically(target, yaml.safe_dump(spec, sort_keys=False))
        return target

    def _resolved_yaml(self, path: Path) -> dict[str, Any]:
        """The dataset YAML at ``path`` with every folder absolute (relative ones would resolve inside
        ultralytics' datasets_dir) and checked to exist."""
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ApaError(f"{path} is not valid YAML: {exc}") from None
        missing = [key for key in ("train", "val", "names") if key not in spec]
        if missing:
            raise ApaError(f"{path} lacks {', '.join(missing)}; a YOLO data.yaml needs train, val and names.")
        root = (path.parent / spec.get("path", ".")).resolve()
        spec.pop("download", None)  # never let ultralytics fetch a dataset
        spec["path"] = str(root)
        for split in SPLITS:
            spec[split] = _absolute(root, spec[split])
            for folder in [spec[split]] if isinstance(spec[split], str) else spec[split]:
                if not Path(folder).exists():
                    raise ApaError(f"{path}: the {split} images {folder} do not exist; fix the paths in that file.")
        return spec

    def _settings(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed,
            "only_with_objects": self.only_with_objects,
            "max_truncation": self.max_truncation,
            "max_occlusion": self.max_occlusion,
            "min_height": self.min_height,
        }

    def _fingerprint(self, images: list[Path]) -> str:
        """A hash of the settings and of every image and label file (name, size, modification time)."""
        files = []
        for image in images:
            for path in (image, self.label_dir / f"{image.stem}.txt"):
                stat = path.stat() if path.is_file() else None
                files.append([str(path), stat and stat.st_size, stat and stat.st_mtime_ns])
        payload = json.dumps({"settings": self._settings(), "files": files}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _converted(self, fingerprint: str) -> bool:
        """Whether ``yolo_dir`` holds a finished conversion of these files with these settings."""
        stamp = self.yolo_dir / STAMP
        if not stamp.is_file():
            return False
        try:
            return json.loads(stamp.read_bytes().decode()).get("fingerprint") == fingerprint
        except (ValueError, UnicodeDecodeError, AttributeError) as exc:  # a damaged stamp: the folder is remade
            log.info("%s is damaged (%s): converting KITTI again.", stamp, describe(exc))
            return False

    def _check_yolo_dir(self) -> None:
        """Raise ApaError unless ``yolo_dir`` may be (re)written: outside KITTI's ``training`` folder, and either
        missing, empty, or an earlier conversion (it holds our ``conversion.json``). Never deletes anything else."""
        training = self.data_dir / "training"
        if self.yolo_dir == training or training in self.yolo_dir.parents:
            raise ApaError(
                f"data.yolo_dir={self.yolo_dir} lies inside KITTI's {training}; choose an empty or new folder "
                "outside it (null: <data_dir>/yolo)."
            )
        if not self.yolo_dir.exists():
            return
        if not self.yolo_dir.is_dir():
            raise ApaError(f"data.yolo_dir={self.yolo_dir} is a file; choose an empty or new folder.")
        if not (self.yolo_dir / STAMP).is_file() and any(self.yolo_dir.iterdir()):
            raise ApaError(
                f"data.yolo_dir={self.yolo_dir} holds files that are not a conversion of this tool (no {STAMP}), "
                "and converting would replace them; choose an empty or new folder for data.yolo_dir."
            )

    def _remove_stale_partials(self) -> None:
        """Remove the half-written conversions (``.<yolo_dir>.partial-<pid>``) of processes that no longer run."""
        for partial in self.yolo_dir.parent.glob(f".{self.yolo_dir.name}.partial-*"):
            pid = partial.name.rpartition("-")[2]
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:  # a dead process (a permission error means it still runs)
                log.info("Removing %s, left by an interrupted conversion.", partial)
                shutil.rmtree(partial, ignore_errors=True)
            except OSError:
                pass

    def _convert_if_changed(self) -> Path:
        images = sorted(self.image_dir.glob("*.png"))
        if not images:
            raise ApaError(f"{self.image_dir} holds no .png images; unzip KITTI's left colour images there.")
        fingerprint = self._fingerprint(images)
        if self._converted(fingerprint):
            log.info("KITTI already converted in %s (same files and settings).", self.yolo_dir)
            return self.yolo_dir / "data.yaml"
        self._check_yolo_dir()
        self._remove_stale_partials()
        log.info("Converting %d KITTI images into the YOLO layout in %s ...", len(images), self.yolo_dir)
        # build next to the target and rename at the end, so an interrupted conversion never looks complete
        partial = self.yolo_dir.with_name(f".{self.yolo_dir.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            summary = self._convert(images, partial, fingerprint)
            write_text_atomically(partial / STAMP, json.dumps(summary, indent=2) + "\n")
            if self._converted(fingerprint):  # a parallel run (a sweep's job) finished the same conversion first
                shutil.rmtree(partial)
                return self.yolo_dir / "data.yaml"
            self._check_yolo_dir()  # (a parallel run may have written something else there meanwhile)
            shutil.rmtree(self.yolo_dir, ignore_errors=True)
            partial.rename(self.yolo_dir)
        except BaseException:  # an error, Ctrl-C or SIGTERM: leave no half-written folder behind
            shutil.rmtree(partial, ignore_errors=True)
            raise
        counts = summary["images"]
        log.info("Converted: %d training and %d validation images; objects %s", *counts.values(), summary["objects"])
        return self.yolo_dir / "data.yaml"

    def _convert(self, images: list[Path], out: Path, fingerprint: str) -> dict[str, Any]:
        """Write images (symbolic links) and label files of both splits and data.yaml into ``out``."""
        from PIL import Image

        class_ids = {kind: self.names.index(name) for kind, name in self.classes.items()}
        labels: dict[str, list[str]] = {}
        for image in images:
            label_file = self.label_dir / f"{image.stem}.txt"
            if not label_file.is_file():
                raise ApaError(f"{image} has no label file {label_file}; unzip KITTI's training labels there.")
            try:
                with Image.open(image) as opened:  # reads the header only
                    width, height = opened.size
            except Exception as exc:  # PIL's errors, or those of the opener ultralytics patches in (pi_heif)
                raise ApaError(
                    f"{image} cannot be read as an image ({type(exc).__name__}; {image.stat().st_size} bytes): it is "
                    "damaged or cut short. Replace it with the original from KITTI's left colour images "
                    "(data_object_image_2.zip), or move it and its label file out of the folder."
                ) from None
            labels[image.stem] = yolo_lines(
                read_label_file(label_file),
                width,
                height,
                class_ids,
                self.max_truncation,
                self.max_occlusion,
                self.min_height,
            )
        stems = [s for s in sorted(labels) if labels[s] or not self.only_with_objects]
        if len(stems) < 2:
            raise ApaError(
                f"Only {len(stems)} image(s) of {self.image_dir} remain after the class mapping and filters; "
                "at least 2 are needed for a training and a validation part."
            )
        random.Random(self.split_seed).shuffle(stems)
        n_val = min(max(round(len(stems) * self.val_fraction), 1), len(stems) - 1)
        parts = {"val": sorted(stems[:n_val]), "train": sorted(stems[n_val:])}
        objects: Counter[str] = Counter()
        for split in SPLITS:
            (out / "images" / split).mkdir(parents=True)
            (out / "labels" / split).mkdir(parents=True)
            for stem in parts[split]:
                # a link, not a copy: the YOLO folder costs no second copy of KITTI's 12 GB of images
                (out / "images" / split / f"{stem}.png").symlink_to(self.image_dir / f"{stem}.png")
                (out / "labels" / split / f"{stem}.txt").write_text("".join(f"{line}\n" for line in labels[stem]))
                objects.update(self.names[int(line.split()[0])] for line in labels[stem])
        spec = {
            "path": str(self.yolo_dir),
            **{split: str(self.yolo_dir / "images" / split) for split in SPLITS},
            "names": dict(enumerate(self.names)),
        }
        (out / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        return {
            "fingerprint": fingerprint,
            "source": str(self.data_dir),
            "settings": self._settings(),
            "images": {split: len(parts[split]) for split in SPLITS},
            "objects": dict(objects),
        }
