"""YOLO detection on KITTI: the converter, the ultralytics wrapper (task=detect), resume, transfer and prediction.

The KITTI folders are written by the tests in KITTI's own format; training runs on the CPU at 64 pixels.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from apa_lightning.detection.kitti import KittiDetectionData, KittiObject, read_label_file, yolo_lines
from apa_lightning.errors import ApaError, user_error


def kitti_line(kind: str, box: tuple[float, float, float, float], truncated: float = 0.0, occluded: int = 0) -> str:
    """A 15-field KITTI label line (the 3-D fields are plausible constants)."""
    left, top, right, bottom = box
    box_fields = f"{left:.2f} {top:.2f} {right:.2f} {bottom:.2f}"
    return f"{kind} {truncated:.2f} {occluded} -1.57 {box_fields} 1.5 1.6 3.9 1.0 1.7 20.0 -1.5"


# The hand-computed image: 100 x 50 pixels.
HAND_LINES = [
    kitti_line("Car", (10, 5, 30, 25)),  # -> 0 0.2 0.3 0.2 0.4
    kitti_line("DontCare", (50, 10, 60, 20)),
    kitti_line("Car", (90, -5, 120, 20), truncated=0.5),  # clipped to (90, 0, 100, 20) -> 0 0.95 0.2 0.1 0.4
    kitti_line("Car", (110, 10, 130, 20)),  # entirely outside: dropped
    kitti_line("Pedestrian", (40, 10, 48, 40), occluded=2),  # -> 1 0.44 0.5 0.08 0.6 when pedestrians are kept
]
HAND_CAR_LINES = ["0 0.200000 0.300000 0.200000 0.400000", "0 0.950000 0.200000 0.100000 0.400000"]


def write_kitti(root: Path, count: int = 16, seed: int = 0) -> Path:
    """A KITTI object-detection folder: ``000000`` is the hand-computed image, ``000001`` has no car (only a
    pedestrian and a DontCare region), the others are 128 x 64 plain backgrounds with red cars and blue
    pedestrians drawn as filled boxes."""
    rng = np.random.default_rng(seed)
    images, labels = root / "training" / "image_2", root / "training" / "label_2"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(count):
        width, height = (100, 50) if i == 0 else (128, 64)
        pixels = np.full((height, width, 3), rng.integers(150, 230), dtype=np.uint8)
        lines = HAND_LINES if i == 0 else [kitti_line("DontCare", (0, 0, 8, 8))]
        objects = [("Pedestrian", (20, 10, 30, 50))] if i == 1 else []
        if i > 1:
            for _ in range(rng.integers(1, 3)):
                w, h = rng.integers(28, 48), rng.integers(16, 28)
                x, y = rng.integers(-10, width - w + 10), rng.integers(height // 3, height - h)
                objects.append(("Car", (x, y, x + w, y + h)))
            if rng.random() < 0.5:
                x = rng.integers(0, width - 10)
                objects.append(("Pedestrian", (x, 8, x + 10, 40)))
        for kind, box in objects:
            left, top, right, bottom = (int(v) for v in box)
            colour = (200, 30, 30) if kind == "Car" else (30, 30, 200)
            pixels[max(top, 0) : bottom, max(left, 0) : right] = colour
            lines.append(kitti_line(kind, box))
        Image.fromarray(pixels).save(images / f"{i:06d}.png")
        (labels / f"{i:06d}.txt").write_text("\n".join(lines) + "\n")
    return root


def converted_labels(data_yaml: Path) -> dict[str, list[str]]:
    """Label lines of every image of a converted dataset, by image name."""
    spec = yaml.safe_load(data_yaml.read_text())
    lines = {}
    for split in ("train", "val"):
        for label in Path(spec[split].replace("/images/", "/labels/")).glob("*.txt"):
            lines[label.stem] = label.read_text().splitlines()
    return lines


def test_kitti_boxes_become_normalised_yolo_lines_clipped_to_the_image(tmp_path):
    root = write_kitti(tmp_path / "kitti", count=4)
    data = KittiDetectionData(str(root), classes={"Car": "car"}, val_fraction=0.5)
    data_yaml = data.prepare(tmp_path)
    spec = yaml.safe_load(data_yaml.read_text())
    assert spec["names"] == {0: "car"} and Path(spec["train"]).is_absolute() and Path(spec["val"]).is_absolute()
    labels = converted_labels(data_yaml)
    assert labels["000000"] == HAND_CAR_LINES
    assert labels["000001"] == []  # no car: an empty label file, the image stays
    assert len(labels) == 4 and len(list(Path(spec["val"]).iterdir())) == 2
    assert (Path(spec["train"]) / "000002.png").resolve() == (root / "training/image_2/000002.png").resolve() or (
        Path(spec["val"]) / "000002.png"
    ).resolve() == (root / "training/image_2/000002.png").resolve()


def test_class_mapping_and_filters_choose_the_objects(tmp_path):
    objects = read_label_file(write_kitti(tmp_path / "kitti", count=1) / "training/label_2/000000.txt")
    assert [o.kind for o in objects] == ["Car", "DontCare", "Car", "Car", "Pedestrian"]
    ids = {"Car": 0, "Pedestrian": 1, "DontCare": 2}  # DontCare is never kept, even when mapped
    assert yolo_lines(objects, 100, 50, ids) == [*HAND_CAR_LINES, "1 0.440000 0.500000 0.080000 0.600000"]
    assert yolo_lines(objects, 100, 50, ids, max_truncation=0.3) == HAND_CAR_LINES[:1] + [
        "1 0.440000 0.500000 0.080000 0.600000"
    ]
    assert yolo_lines(objects, 100, 50, ids, max_occlusion=1) == HAND_CAR_LINES
    assert yolo_lines(objects, 100, 50, ids, min_height=25) == ["1 0.440000 0.500000 0.080000 0.600000"]
    degenerate = [KittiObject("Car", 0, 0, 20, 10, 20, 30)]  # zero width
    assert yolo_lines(degenerate, 100, 50, {"Car": 0}) == []


def test_only_with_objects_drops_images_without_a_kept_class_and_the_split_is_seeded(tmp_path):
    root = write_kitti(tmp_path / "kitti", count=10)
    first = KittiDetectionData(str(root), {"Car": "car"}, yolo_dir=str(tmp_path / "a"), only_with_objects=True)
    labels = converted_labels(first.prepare(tmp_path))
    assert "000001" not in labels and len(labels) == 9
    again = KittiDetectionData(str(root), {"Car": "car"}, yolo_dir=str(tmp_path / "b"), only_with_objects=True)
    val = lambda d: sorted(p.name for p in (d / "images" / "val").iterdir())  # noqa: E731
    again.prepare(tmp_path)
    assert val(tmp_path / "a") == val(tmp_path / "b") and len(val(tmp_path / "a")) == 2  # round(9 * 0.2)
    other = KittiDetectionData(str(root), {"Car": "car"}, yolo_dir=str(tmp_path / "c"), split_seed=7)
    other.prepare(tmp_path)
    assert val(tmp_path / "c") != val(tmp_path / "a")


def test_conversion_is_redone_only_when_files_or_settings_change(tmp_path):
    root = write_kitti(tmp_path / "kitti", count=4)
    stamp = root / "yolo" / "conversion.json"
    KittiDetectionData(str(root), {"Car": "car"}).prepare(tmp_path)
    made = stamp.stat().st_mtime_ns
    KittiDetectionData(str(root), {"Car": "car"}).prepare(tmp_path)
    assert stamp.stat().st_mtime_ns == made  # same files, same settings: kept
    data_yaml = KittiDetectionData(str(root), {"Car": "car", "Pedestrian": "pedestrian"}).prepare(tmp_path)
    assert yaml.safe_load(data_yaml.read_text())["names"] == {0: "car", 1: "pedestrian"}
    assert "1 0.440000 0.500000 0.080000 0.600000" in converted_labels(data_yaml)["000000"]
    label = root / "training" / "label_2" / "000002.txt"
    label.write_text(kitti_line("Car", (0, 0, 64, 32)) + "\n")
    KittiDetectionData(str(root), {"Car": "car", "Pedestrian": "pedestrian"}).prepare(tmp_path)
    assert converted_labels(data_yaml)["000002"] == ["0 0.250000 0.250000 0.500000 0.500000"]
    assert not list(root.glob(".yolo.partial*"))


def test_an_interrupted_conversion_is_not_taken_for_a_finished_one(tmp_path, monkeypatch):
    root = write_kitti(tmp_path / "kitti", count=4)
    data = KittiDetectionData(str(root), {"Car": "car"})
    calls, symlink_to = [], Path.symlink_to

    def fail_third(self, target, *args):
        calls.append(self)
        if len(calls) == 3:
            raise KeyboardInterrupt  # half-way through writing the images
        return symlink_to(self, target, *args)

    monkeypatch.setattr(Path, "symlink_to", fail_third)
    with pytest.raises(KeyboardInterrupt):
        data.prepare(tmp_path)
    assert len(calls) == 3 and calls[0].parent.parent.parent.name.startswith(".yolo.partial-")
    assert not (root / "yolo").exists() and not list(root.glob(".yolo.partial*"))  # the partial folder is gone
    monkeypatch.undo()
    assert converted_labels(data.prepare(tmp_path))["000000"] == HAND_CAR_LINES


def test_stale_partial_conversions_of_dead_processes_are_removed(tmp_path):
    root = write_kitti(tmp_path / "kitti", count=3)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = root / f".yolo.partial-{finished.stdout.strip()}", root / f".yolo.partial-{os.getppid()}"
    for folder in (dead, alive):
        (folder / "labels").mkdir(parents=True)
    KittiDetectionData(str(root), {"Car": "car"}).prepare(tmp_path)
    assert not dead.exists() and alive.exists()  # a running process's conversion is left alone


def test_yolo_dir_is_replaced_only_when_empty_or_an_earlier_conversion(tmp_path):
    root = write_kitti(tmp_path / "kitti", count=3)
    own = tmp_path / "own"
    own.mkdir()
    (own / "notes.txt").write_text("mine")
    for yolo_dir, message in (
        (own, f"data.yolo_dir={own} holds files that are not a conversion of this tool"),
        (root, f"data.yolo_dir={root} holds files that are not a conversion"),  # yolo_dir=${data.data_dir}
        (root / "training", "lies inside KITTI's"),
        (root / "training" / "yolo", "lies inside KITTI's"),
    ):
        with pytest.raises(ApaError, match=message) as error:
            KittiDetectionData(str(root), {"Car": "car"}, yolo_dir=str(yolo_dir)).prepare(tmp_path)
        assert "choose an empty or new folder" in str(error.value)
    assert (own / "notes.txt").read_text() == "mine" and len(list((root / "training" / "image_2").iterdir())) == 3
    assert not (root / "training" / "yolo").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    KittiDetectionData(str(root), {"Car": "car"}, yolo_dir=str(empty)).prepare(tmp_path)
    assert (empty / "conversion.json").is_file()
    KittiDetectionData(str(root), {"Car": "car"}, yolo_dir=str(empty), split_seed=1).prepare(tmp_path)  # redone
    assert json.loads((empty / "conversion.json").read_text())["settings"]["split_seed"] == 1


def test_precision_devices_and_val_lists_map_to_ultralytics(tmp_path, monkeypatch):
    import torch

    from apa_lightning.detection.train import _image_files
    from apa_lightning.detection.yolo import ultralytics_amp, ultralytics_device

    for precision in (32, "32", "32-true", 64, "64", "64-true", None):
        assert ultralytics_amp(precision) is False
    assert [ultralytics_amp(p) for p in ("bf16", "bf16-mixed", "bf16-true")] == ["bf16"] * 3
    assert all(ultralytics_amp(p) is True for p in (16, "16", "16-mixed", "16-true"))
    with pytest.raises(ApaError, match="trainer.precision=transformer-engine"):
        ultralytics_amp("transformer-engine")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    expected = {"auto": "0,1,2,3", -1: "0,1,2,3", "-1": "0,1,2,3", 2: "0,1", "2": "0,1", "0,1": "0,1", "1,": "1"}
    expected.update({" 1, 3 ": "1,3", (2,): "2"})
    for devices, device in expected.items():
        assert ultralytics_device("auto", list(devices) if isinstance(devices, tuple) else devices) == device
    assert ultralytics_device("cpu", "0,,,1") == "cpu"
    for devices in ("0,,x", "a", 0, 5, [4], [], "gpu"):
        with pytest.raises(ApaError, match=re.escape(f"trainer.devices={devices} cannot be used with 4 visible")):
            ultralytics_device("gpu", devices)

    (tmp_path / "images").mkdir()
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / "images" / name).write_bytes(b"")
    (tmp_path / "val.txt").write_text(f"./images/b.png\n{tmp_path / 'images' / 'a.jpg'}\n\n")
    assert _image_files(str(tmp_path / "val.txt")) == [tmp_path / "images" / n for n in ("a.jpg", "b.png")]
    assert _image_files([str(tmp_path / "images")]) == [tmp_path / "images" / n for n in ("a.jpg", "b.png")]


def test_a_bad_label_line_names_the_file_and_line(tmp_path):
    root = write_kitti(tmp_path / "kitti", count=3)
    label = root / "training" / "label_2" / "000002.txt"
    label.write_text(label.read_text() + "Car 0.0 0 -1.5 10 10 oops 40 1.5 1.6 3.9 1.0 1.7 20.0 -1.5\n")
    with pytest.raises(ApaError, match=f"{label}, line 3: not a KITTI label line") as error:
        KittiDetectionData(str(root), {"Car": "car"}).prepare(tmp_path)
    assert "15 space-separated fields" in str(error.value)
    label.write_text("Car 0.0 0 -1.5 10 10 20 40\n")
    with pytest.raises(ApaError, match="line 1: not a KITTI label line .8 fields instead of 15"):
        KittiDetectionData(str(root), {"Car": "car"}).prepare(tmp_path)
    assert not (root / "yolo").exists()


def test_a_yolo_folder_with_data_yaml_is_used_as_it_is(tmp_path):
    root = tmp_path / "ready"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: car}\n")
    spec = yaml.safe_load(KittiDetectionData(str(root), {"Car": "car"}).prepare(tmp_path).read_text())
    assert spec["train"] == str(root / "images" / "train") and spec["names"] == {0: "car"}
    assert not (root / "yolo").exists()
    with pytest.raises(ApaError, match="holds neither KITTI object detection"):
        KittiDetectionData(str(tmp_path / "empty"), {"Car": "car"}).prepare(tmp_path)


def test_resume_cuts_results_to_the_epochs_the_checkpoint_holds(tmp_path):
    from apa_lightning.detection.train import _prepare_resume, read_results

    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "last.pt").write_bytes(b"checkpoint")
    (tmp_path / "events.out.tfevents.1.host.1.0").write_bytes(b"")  # TensorBoard's file of the cut epochs
    header = "epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,metrics/precision(B),metrics/recall(B)\n"
    rows = "".join(f"{e},{e * 1.5},1.0,2.0,3.0,0.5,0.25\n" for e in (1, 2, 3))
    (tmp_path / "results.csv").write_text(header + rows)
    # stopped after epoch 3's row was written but before its checkpoint: last.pt holds 2 epochs
    assert _prepare_resume(tmp_path / "weights" / "last.pt", 2, tmp_path) == tmp_path / "weights" / "last.pt"
    epochs = read_results(tmp_path / "results.csv")
    assert [e for e, _ in epochs] == [1, 2] and not list(tmp_path.glob("events.out.tfevents.*"))
    assert epochs[0][1] == {
        "train/box_loss": 1.0,
        "train/cls_loss": 2.0,
        "train/dfl_loss": 3.0,
        "train/loss": 6.0,
        "val/precision": 0.5,
        "val/recall": 0.25,
        "val/f1": pytest.approx(1 / 3),
    }


def test_missing_hub_weights_fail_at_once_naming_where_to_put_them(make_cfg, tmp_path):
    from apa_lightning.detection.train import train

    write_kitti(tmp_path / "data" / "kitti", count=4)
    cfg = make_cfg("experiment=kitti_yolo_transfer")
    start = time.perf_counter()
    with pytest.raises(ApaError) as error:
        train(cfg)
    assert time.perf_counter() - start < 5  # no GitHub look-ups
    expected = tmp_path / "weights" / "yolov8n.pt"
    assert f"model.weights={expected}: no such file" in str(error.value)
    assert "releases/download/v8.4.0/yolov8n.pt" in str(error.value) and f"put it at {expected}" in str(error.value)
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert record["status"] == "failed" and "yolov8n.pt" in record["error"]


def test_a_record_that_cannot_be_written_does_not_hide_the_error(make_cfg, tmp_path, monkeypatch, caplog):
    import apa_lightning.detection.train as detection_train
    import apa_lightning.runs.record as run_record

    def full_disk(path, record):
        raise ApaError(f"the disk is full: writing {path} failed")

    monkeypatch.setattr(run_record, "write_metrics", full_disk)
    write_kitti(tmp_path / "data" / "kitti", count=4)
    with pytest.raises(ApaError, match="yolov8n.pt: no such file"):
        detection_train.train(make_cfg("experiment=kitti_yolo_transfer"))
    assert "Could not write" in caplog.text and "the disk is full" in caplog.text


def test_detection_task_needs_yolo_and_kitti_configs(make_cfg):
    from apa_lightning.detection.predict import predict
    from apa_lightning.detection.train import train

    with pytest.raises(ApaError, match="needs model=yolo and data=kitti"):
        train(make_cfg("task=detect", "model=yolo", "optimized_metric=val/map50"))
    with pytest.raises(ApaError, match="optimized_metric=val/acc is not a detection metric"):
        train(make_cfg("experiment=kitti_yolo_scratch", "optimized_metric=val/acc"))
    with pytest.raises(ApaError, match=r"x.pt is a YOLO detector's weights \(.pt\), which task=predict runs with"):
        predict(make_cfg("task=predict", "model=ae", "ckpt_path=x.pt", "input=."))


def test_yolo_and_kitti_configs_compose(make_cfg):
    from hydra.utils import instantiate

    cfg = make_cfg("experiment=kitti_yolov5s_cars", "data.batch_size=8")
    model, data = instantiate(cfg.model, _convert_="all"), instantiate(cfg.data, _convert_="all")
    assert cfg.task == "detect" and model.arch == "yolov5s.yaml" and model.batch == 8
    assert data.only_with_objects and data.names == ["car"]
    assert make_cfg("experiment=kitti_yolo_scratch").data.classes == {
        "Car": "car",
        "Pedestrian": "pedestrian",
        "Cyclist": "cyclist",
    }
    assert len(instantiate(make_cfg("model=yolo", "data=kitti", "data/classes=kitti8").data).names) == 8
    for override, message in (
        ("model.arch=yolov8n.pt", "model.arch=yolov8n.pt is not a model YAML (e.g. yolov8n.yaml); starting weights"),
        ("model.optimizer=sgd", "model.optimizer=sgd is not one of ultralytics' optimizers: SGD, Adam"),
        ("+model.train_args.epochs=3", "model.train_args sets arguments that come from other config keys (epochs: set"),
    ):
        with pytest.raises(Exception) as error:
            instantiate(make_cfg("model=yolo", override).model, _convert_="all")
        assert message in user_error(error.value)


def _tensorboard(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(run_dir)).Reload()


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory) -> dict:
    """One CLI training run (3 epochs at 64 pixels on 16 synthetic images) stopped by SIGTERM once its first
    epoch is saved, then continued with ``resume=<run dir>``; HOME and the working directory are empty folders."""
    base = tmp_path_factory.mktemp("detect")
    kitti, home, cwd = write_kitti(base / "kitti"), base / "home", base / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(base / "mpl"), "HYDRA_FULL_ERROR": ""}
    for name in ("YOLO_CONFIG_DIR", "YOLO_OFFLINE", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        env.pop(name, None)
    command = [sys.executable, "-m", "apa_lightning"]
    overrides = [
        "experiment=kitti_yolo_scratch",
        f"data.data_dir={kitti}",
        "trainer=cpu",
        "trainer.max_epochs=3",
        "model.imgsz=64",
        "model.batch=4",
        "data.num_workers=0",
        f"paths.log_dir={base / 'outputs'}",
        "seed=0",
    ]
    with open(base / "first.log", "w") as log:
        first = subprocess.Popen([*command, *overrides], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            runs = list((base / "outputs" / "runs" / "kitti_yolo_scratch").glob("*/results.csv"))
            if runs and (runs[0].parent / "weights" / "last.pt").is_file():
                break  # (the signal is handled only once ultralytics' one write of last.pt has returned)
            time.sleep(0.05)
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    (run_dir,) = (base / "outputs" / "runs" / "kitti_yolo_scratch").iterdir()
    interrupted = json.loads((run_dir / "metrics.json").read_text())
    rows_before = len((run_dir / "results.csv").read_text().splitlines()) - 1
    shutil.copytree(run_dir, base / "interrupted")  # as it was stopped, for the ckpt_path test
    resumed = subprocess.run(
        [*command, f"resume={run_dir}"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    return {
        "base": base,
        "kitti": kitti,
        "home": home,
        "cwd": cwd,
        "run_dir": run_dir,
        "first_code": first.returncode,
        "first_log": (base / "first.log").read_text(),
        "interrupted": interrupted,
        "rows_before": rows_before,
        "resumed": resumed,
    }


@pytest.mark.slow
def test_cli_detection_run_stopped_by_sigterm_resumes_in_place(detection_run):
    run_dir, resumed = detection_run["run_dir"], detection_run["resumed"]
    assert detection_run["first_code"] == 128 + signal.SIGTERM, detection_run["first_log"][-3000:]
    assert detection_run["interrupted"]["status"] == "interrupted"
    assert detection_run["interrupted"]["signal"] == "SIGTERM" and 1 <= detection_run["rows_before"] < 3
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 3
    assert record["resumed_from"] == str(run_dir / "weights" / "last.pt")
    epochs = [line.split(",")[0] for line in (run_dir / "results.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]  # the resumed run went on after the saved epoch
    steps = [event.step for event in _tensorboard(run_dir).Scalars("val/map50")]
    assert steps == [1, 2, 3]  # each epoch once, the ones before the interruption included


@pytest.mark.slow
def test_ckpt_path_resumes_into_a_new_run_directory_with_the_earlier_history(
    detection_run, make_cfg, monkeypatch, tmp_path
):
    from apa_lightning.detection.train import train

    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo_config"))  # undone after the test
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    old = detection_run["base"] / "interrupted"
    before = (old / "weights" / "last.pt").read_bytes()
    overrides = [f"data.data_dir={detection_run['kitti']}", "data.num_workers=0", "model.val_images=0"]
    resume = ["experiment=kitti_yolo_scratch", f"ckpt_path={old / 'weights' / 'last.pt'}", *overrides]
    cfg = make_cfg(*resume, "trainer.max_epochs=5")  # ultralytics would silently keep the checkpoint's 3
    with pytest.raises(ApaError, match="trainer.max_epochs=5, but .* belongs to a training of 3 epochs"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()
    cfg = make_cfg(*resume, "trainer.max_epochs=3")
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 3
    epochs = [line.split(",")[0] for line in (run_dir / "results.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]
    assert [event.step for event in _tensorboard(run_dir).Scalars("val/map50")] == [1, 2, 3]
    assert (old / "weights" / "last.pt").read_bytes() == before  # the interrupted run is left as it was
    assert len((old / "results.csv").read_text().splitlines()) - 1 == detection_run["rows_before"]


@pytest.mark.slow
def test_cli_detection_run_records_metrics_tensorboard_and_images_inside_its_directory(detection_run):
    run_dir = detection_run["run_dir"]
    record = json.loads((run_dir / "metrics.json").read_text())
    five = {"val/map50", "val/map50_95", "val/precision", "val/recall", "val/f1"}
    assert set(record["test"]) == five and all(0 <= v <= 1 for v in record["test"].values())
    assert record["optimized_metric"] == "val/map50_95" and record["best_score"] == pytest.approx(
        max(float(r.split(",")[8]) for r in (run_dir / "results.csv").read_text().splitlines()[1:])
    )
    assert set(record["per_class"]) <= {"car", "pedestrian"} and record["per_class"]
    for values in record["per_class"].values():
        assert set(values) == {"instances", "map50", "map50_95", "precision", "recall", "f1"}
    assert (
        record["best_checkpoint"] == str(run_dir / "weights" / "best.pt") and Path(record["best_checkpoint"]).is_file()
    )

    events = _tensorboard(run_dir)
    assert {"train/loss", "train/box_loss", "val/loss", "val/cls_loss", "lr/pg0", "best/val/map50_95"} | five <= set(
        events.Tags()["scalars"]
    )
    assert "val/predictions" in events.Tags()["images"]
    with Image.open(run_dir / "images" / "val_predictions.png") as grid:
        val_images = yaml.safe_load((run_dir / "data.yaml").read_text())["val"]
        heights = [Image.open(p).height for p in sorted(Path(val_images).iterdir())[:4]]  # model.val_images: 4
        assert grid.format == "PNG" and grid.width == 128 and grid.height == sum(h + 4 for h in heights)
    settings = json.loads((run_dir / ".ultralytics" / "Ultralytics" / "settings.json").read_text())
    assert settings["sync"] is False and settings["runs_dir"].startswith(str(run_dir))
    # ultralytics wrote nothing into HOME (~/.config) or the working directory (./runs)
    assert not list(detection_run["home"].rglob("*")) and not list(detection_run["cwd"].rglob("*"))
    outside = {p.relative_to(detection_run["base"]).parts[0] for p in detection_run["base"].iterdir()}
    assert outside == {"kitti", "home", "cwd", "outputs", "mpl", "first.log", "interrupted"}


@pytest.mark.slow
def test_a_refused_resume_of_a_finished_run_leaves_its_records_as_they_were(detection_run):
    from apa_lightning.detection.train import train
    from apa_lightning.tasks.train import compose_config

    run_dir = detection_run["run_dir"]
    kept = {name: (run_dir / name).read_bytes() for name in ("metrics.json", ".hydra/overrides.yaml")}
    env = {**os.environ, "HOME": str(detection_run["home"]), "HYDRA_FULL_ERROR": ""}
    refused = subprocess.run(
        [sys.executable, "-m", "apa_lightning", f"resume={run_dir}"],
        cwd=detection_run["cwd"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1 and "holds a finished training" in refused.stderr, refused.stderr[-3000:]
    last = run_dir / "weights" / "last.pt"
    overrides = [f"ckpt_path={last}", f"paths.output_dir={run_dir}", f"data.data_dir={detection_run['kitti']}"]
    with pytest.raises(ApaError, match="holds a finished training"):
        train(compose_config(["experiment=kitti_yolo_scratch", "trainer.max_epochs=3", *overrides]))
    assert {name: (run_dir / name).read_bytes() for name in kept} == kept


@pytest.mark.slow
def test_transfer_from_a_runs_weights_keeps_the_frozen_backbone(detection_run, make_cfg, monkeypatch, tmp_path):
    import torch

    from apa_lightning.detection.train import train

    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo_config"))  # undone after the test
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    source = detection_run["run_dir"] / "weights" / "best.pt"
    cfg = make_cfg(
        "experiment=kitti_yolo_transfer",
        f"model.weights={source}",
        "model.freeze=10",
        f"data.data_dir={detection_run['kitti']}",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "model.imgsz=64",
        "model.batch=4",
        "data.num_workers=0",
        "model.val_images=0",
    )
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    before = torch.load(source, weights_only=False)["model"].state_dict()
    after = torch.load(run_dir / "weights" / "last.pt", weights_only=False)["model"].state_dict()
    backbone = [k for k in before if k.split(".")[1].isdigit() and int(k.split(".")[1]) < 10]
    head = [k for k in before if k.startswith("model.22.") and k.endswith("weight")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)  # loaded, then frozen
    assert any(not torch.equal(before[k], after[k]) for k in head)  # the rest trained
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_predict_writes_annotated_copies_and_a_csv_of_boxes(detection_run, make_cfg, monkeypatch, tmp_path):
    import csv

    import ultralytics

    from apa_lightning.detection.predict import predict

    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo_config"))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "bus.jpg").write_bytes((ultralytics.ASSETS / "bus.jpg").read_bytes())
    (folder / "notes.txt").write_text("not an image")
    cfg = make_cfg(
        "task=predict",
        "model=yolo",
        f"ckpt_path={detection_run['run_dir'] / 'weights' / 'best.pt'}",
        f"input={folder}",
        "model.imgsz=64",
        "model.conf=0.001",  # the 3-epoch detector is unsure of everything: keep its boxes to check the CSV
        "trainer=cpu",
    )
    predict(cfg)
    run_dir = Path(cfg.paths.output_dir)
    with Image.open(run_dir / "predictions" / "bus.jpg") as annotated, Image.open(folder / "bus.jpg") as original:
        assert annotated.size == original.size and annotated.format == "JPEG"
    assert [p.name for p in (run_dir / "predictions").iterdir()] == ["bus.jpg"]
    with open(run_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "class", "confidence", "x1", "y1", "x2", "y2"]
    for row in rows:
        assert row["file"] == str(folder / "bus.jpg") and row["class"] in {"car", "pedestrian", "cyclist"}
        assert 0.001 <= float(row["confidence"]) <= 1
        assert 0 <= float(row["x1"]) <= float(row["x2"]) <= 810 and 0 <= float(row["y1"]) <= float(row["y2"]) <= 1080
    empty = tmp_path / "empty"
    empty.mkdir()
    best = detection_run["run_dir"] / "weights" / "best.pt"
    with pytest.raises(ApaError, match="the folder holds no images"):
        predict(make_cfg("task=predict", "model=yolo", f"ckpt_path={best}", f"input={empty}"))


def test_yolov3_experiments_train_the_reports_200_epochs_at_416_px(make_cfg):
    for name in ("kitti_yolov3_scratch", "kitti_yolov3_transfer"):
        cfg = make_cfg(f"experiment={name}")
        assert cfg.model.arch == "yolov3.yaml" and cfg.model.imgsz == 416  # grids 13 / 26 / 52 at strides 32 / 16 / 8
        assert cfg.trainer.max_epochs == 200 and cfg.task == "detect"
    transfer = make_cfg("experiment=kitti_yolov3_transfer")
    assert transfer.model.weights.endswith("weights/yolov3u.pt")
    assert make_cfg("experiment=kitti_yolov3_scratch").model.weights is None


@pytest.mark.slow
def test_an_amp_run_asks_the_amp_check_stand_in_not_ultralytics_downloading_one(make_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo_config"))  # undone after the test
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    import ultralytics.engine.trainer

    from apa_lightning.detection import train as detection
    from apa_lightning.detection.yolo import amp_check_without_download

    monkeypatch.setattr(ultralytics.engine.trainer, "check_amp", ultralytics.engine.trainer.check_amp)  # put back
    checked = []

    def recording_check(model):
        checked.append(next(model.parameters()).device.type)
        return amp_check_without_download(model)

    monkeypatch.setattr(detection, "amp_check_without_download", recording_check)
    cfg = make_cfg(
        "experiment=kitti_yolo_scratch",
        f"data.data_dir={write_kitti(tmp_path / 'kitti')}",
        "trainer=cpu",
        "trainer.precision=16-mixed",  # AMP: ultralytics checks it, also on the CPU, where the check says no
        "trainer.max_epochs=1",
        "model.imgsz=64",
        "model.batch=4",
        "data.num_workers=0",
        "model.val_images=0",
    )
    detection.train(cfg)
    assert checked == ["cpu"]  # ultralytics' trainer asked the stand-in, once
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["status"] == "completed"
