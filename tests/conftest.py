import gzip
import itertools
import struct
from pathlib import Path

import numpy as np
import pytest

from apa_lightning.run import compose_config

_runs = itertools.count()


@pytest.fixture(autouse=True)
def _offline_environment(tmp_path_factory, monkeypatch):
    """No test writes outside its temporary folders or reaches the network for plotting caches."""
    home = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("MPLCONFIGDIR", str(home / "mpl"))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))


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
