import gzip
import itertools
import logging
import os
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from apa_lightning.tasks.train import compose_config

_runs = itertools.count()


def _offline(url, *args, **kwargs):
    raise urllib.error.URLError(f"tests run offline: {getattr(url, 'full_url', url)}")


@pytest.fixture(autouse=True)
def _offline_environment(tmp_path_factory, monkeypatch):
    """No test writes outside its temporary folders or downloads anything, even on a machine with a network:
    torchvision's dataset and weight downloads fail at once, as they do offline."""
    import torch.hub

    home = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("MPLCONFIGDIR", str(home / "mpl"))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.setattr(urllib.request, "urlopen", _offline)  # torchvision.datasets downloads
    monkeypatch.setattr(torch.hub, "urlopen", _offline)  # pretrained weights


@pytest.fixture(autouse=True)
def _no_hydra_log_handlers_left():
    """An in-process CLI run leaves Hydra's console and log-file handlers on the root logger, the console one
    writing into that test's captured output, closed when the test ends: later tests must not log into them."""
    before = logging.getLogger().handlers[:]
    yield
    for handler in logging.getLogger().handlers[:]:
        if handler not in before and type(handler) in (logging.StreamHandler, logging.FileHandler):  # not pytest's
            logging.getLogger().removeHandler(handler)
            handler.close()


def bare_trainer(**kwargs):
    """A Lightning Trainer on the CPU without logger, checkpoints, progress bar or model summary (``kwargs`` add to or
    override that)."""
    import lightning as L

    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return L.Trainer(**{"accelerator": "cpu", **quiet, "enable_model_summary": False, **kwargs})


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the training config like the CLI does, with every path inside ``tmp_path``."""

    def make(*overrides: str):
        return compose_config(
            [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / f'run{next(_runs)}'}", *overrides]
        )

    return make


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """Write ``array`` (uint8) in the IDX format MNIST ships in: magic, dimensions, then the raw bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture
def idx_source(tmp_path) -> Path:
    """A folder with the four MNIST IDX .gz files: 40 training and 20 test images of 28x28."""
    source = tmp_path / "idx_source"
    source.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        write_idx(source / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), compress=True)
        write_idx(source / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, compress=True)
    return source


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 3072) uint8 rows, R then G then B planes: noise around a colour that depends on the class."""
    base = (labels[:, None] * 25 + np.array([0, 80, 160])[None, :]) % 256
    planes = np.repeat(base, 1024, axis=1).astype(np.int64) + rng.integers(-20, 21, (len(labels), 3072))
    return planes.clip(0, 255).astype(np.uint8)


@pytest.fixture
def cifar10_root(tmp_path, monkeypatch) -> Path:
    """A tiny CIFAR-10 (5 training batches of 20 images, a test batch of 20) in torchvision's on-disk
    format, with torchvision's expected md5 sums patched to the fixture's own for this test."""
    import hashlib
    import pickle

    from torchvision.datasets import CIFAR10

    root = tmp_path / "data"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(name: str, content: dict) -> list[str]:
        (folder / name).write_bytes(pickle.dumps(content))
        return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]

    train_list = []
    for i in range(1, 6):
        labels = np.arange(20) % 10
        train_list.append(dump(f"data_batch_{i}", {"data": _cifar_images(labels, rng), "labels": labels.tolist()}))
    labels = np.arange(20) % 10
    test_list = [dump("test_batch", {"data": _cifar_images(labels, rng), "labels": labels.tolist()})]
    meta_name, meta_md5 = dump("batches.meta", {"label_names": CIFAR_CLASSES})
    monkeypatch.setattr(CIFAR10, "train_list", train_list)
    monkeypatch.setattr(CIFAR10, "test_list", test_list)
    monkeypatch.setattr(CIFAR10, "meta", {"filename": meta_name, "key": "label_names", "md5": meta_md5})
    return root


def fill_value(index: int) -> float:
    """The constant every tensor number ``index`` of a fake weights file holds."""
    return 0.001 * (index + 1)


@pytest.fixture(scope="session")
def fake_imagenet_weights(tmp_path_factory) -> Path:
    """Files of the right shapes under the names torchvision caches ImageNet weights by, in the TORCH_HOME
    every test uses. Each tensor is one number expanded, so the files stay tiny."""
    import torch

    from apa_lightning.nets.pretrained import TORCHVISION_NETS, cached_weights_file

    torch_home = tmp_path_factory.getbasetemp() / "torch"
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(torch_home)
    try:
        for name, (builder, _) in TORCHVISION_NETS.items():
            path = cached_weights_file(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            state = builder(weights=None).state_dict()
            fake = {
                k: torch.full((), fill_value(i), dtype=v.dtype).expand(v.shape)
                for i, (k, v) in enumerate(state.items())
            }
            torch.save(fake, path)
    finally:
        if previous is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = previous
    return torch_home


EUROSAT_CLASSES = [
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
]


@pytest.fixture
def eurosat_root(tmp_path) -> Path:
    """A tiny EuroSAT in torchvision's layout: root/eurosat/2750/<class>/<class>_<i>.jpg, ten 64x64 RGB
    JPEGs per class, each class its own colour."""
    from PIL import Image

    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for c, name in enumerate(EUROSAT_CLASSES):
        folder = root / "eurosat" / "2750" / name
        folder.mkdir(parents=True)
        for i in range(10):
            colour = np.array([c * 25, 255 - c * 25, (c * 70) % 256])
            pixels = (colour + rng.integers(-15, 16, (64, 64, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{i + 1}.jpg", quality=95)
    return root
