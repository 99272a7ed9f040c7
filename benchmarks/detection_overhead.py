"""The time our YOLO wrapper adds: one training run through ``python -m apa_lightning task=detect`` against the
same training through ultralytics' own ``yolo train``, on the same converted data and settings, alternating.

    python benchmarks/detection_overhead.py --rounds 4 --epochs 3

The data is a synthetic KITTI-format set (coloured boxes on plain backgrounds; KITTI itself is not on the
machine), converted once by the wrapper. Prints, per round, the mean epoch time from each run's ``results.csv``
and the whole command's wall and CPU time, then the medians and the ratio wrapper / ``yolo``. The wrapper's
start-up (Python, Hydra, the conversion check) is in the command time, not in the epoch time.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent


def kitti_line(kind: str, box: tuple[int, int, int, int]) -> str:
    """A 15-field KITTI label line with the given type and pixel box (the 3-D fields are placeholders)."""
    return f"{kind} 0.00 0 0.00 {box[0]:.2f} {box[1]:.2f} {box[2]:.2f} {box[3]:.2f} 1.5 1.6 3.9 0.0 1.7 10.0 0.0"


def synthetic_kitti(root: Path, images: int, seed: int = 0) -> None:
    """``images`` KITTI-format pictures of 372x112 (KITTI's aspect ratio) with 1-3 red cars each."""
    rng = np.random.default_rng(seed)
    (root / "training" / "image_2").mkdir(parents=True)
    (root / "training" / "label_2").mkdir(parents=True)
    for i in range(images):
        width, height = 372, 112
        pixels = np.full((height, width, 3), rng.integers(120, 230), np.uint8)
        lines = [kitti_line("DontCare", (0, 0, 10, 10))]
        for _ in range(rng.integers(1, 4)):
            w, h = rng.integers(30, 80), rng.integers(20, 45)
            x, y = rng.integers(0, width - w), rng.integers(20, height - h)
            pixels[y : y + h, x : x + w] = (200, 30, 30)
            lines.append(kitti_line("Car", (x, y, x + w, y + h)))
        Image.fromarray(pixels).save(root / "training" / "image_2" / f"{i:06d}.png")
        (root / "training" / "label_2" / f"{i:06d}.txt").write_text("\n".join(lines) + "\n")


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of ``command`` (which must succeed)."""
    import time

    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{done.stderr[-3000:]}")
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def mean_epoch(run_dir: Path) -> float:
    """Seconds per epoch from ultralytics' ``results.csv`` (its ``time`` column is cumulative)."""
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    return float(rows[-1]["time"]) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--imgsz", type=int, default=192)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="apa_detection_bench_"))
    kitti = work / "kitti"
    synthetic_kitti(kitti, args.images)
    print(f"synthetic KITTI-format data (not KITTI): {args.images} images in {kitti}")
    env = {**os.environ, "MPLCONFIGDIR": str(work / "mpl")}
    # ultralytics offline: a config dir of its own with a local font (see ../shared/docs/offline.md)
    yolo_config = work / "yolo_config"
    (yolo_config / "Ultralytics").mkdir(parents=True)
    import matplotlib

    shutil.copyfile(
        Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf", yolo_config / "Ultralytics/Arial.ttf"
    )
    yolo_env = {**env, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(yolo_config)}

    def ours(tag: str) -> tuple[float, float, Path]:
        command = [BIN / "python", "-m", "apa_lightning", "experiment=kitti_yolo_scratch", f"data.data_dir={kitti}"]
        command += ["trainer=cpu", f"trainer.max_epochs={args.epochs}", f"model.imgsz={args.imgsz}"]
        command += [f"model.batch={args.batch}", "data.num_workers=0", f"paths.log_dir={work / 'ours'}"]
        command += [f"task_name=run{tag}"]
        wall, cpu = timed(command, env)
        (run_dir,) = (work / "ours" / "runs" / f"run{tag}").iterdir()
        return wall, cpu, run_dir

    def theirs(tag: str) -> tuple[float, float, Path]:
        # the settings the wrapper passes for kitti_yolo_scratch (its args.yaml), paths aside
        command = [BIN / "yolo", "train", "model=yolov8n.yaml", f"data={kitti / 'yolo' / 'data.yaml'}"]
        command += [f"epochs={args.epochs}", f"imgsz={args.imgsz}", f"batch={args.batch}", "workers=0", "device=cpu"]
        command += ["optimizer=SGD", "lr0=0.01", "momentum=0.937", "weight_decay=0.0005", "seed=42", "amp=False"]
        command += ["deterministic=False", "plots=False", f"project={work / 'yolo'}", f"name=run{tag}", "exist_ok=True"]
        wall, cpu = timed(command, yolo_env)
        return wall, cpu, work / "yolo" / f"run{tag}"

    ours("warmup")  # converts the data once (both sides then read the same YOLO folder)
    results: dict[str, list[tuple[float, float, float]]] = {"wrapper": [], "yolo": []}
    for r in range(args.rounds):
        order = (("wrapper", ours), ("yolo", theirs)) if r % 2 == 0 else (("yolo", theirs), ("wrapper", ours))
        for name, run in order:
            wall, cpu, run_dir = run(str(r))
            epoch = mean_epoch(run_dir)
            results[name].append((epoch, wall, cpu))
            print(f"round {r} {name:8s} epoch {epoch:6.2f} s  command wall {wall:6.2f} s  cpu {cpu:6.2f} s", flush=True)
    medians = {
        name: [statistics.median(column) for column in zip(*rows, strict=True)] for name, rows in results.items()
    }
    for i, what in enumerate(("epoch", "command wall", "command cpu")):
        a, b = medians["wrapper"][i], medians["yolo"][i]
        print(f"median {what:12s}: wrapper {a:6.2f} s, yolo train {b:6.2f} s, ratio {a / b:.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
