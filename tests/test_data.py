import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from apa_lightning.data.digits import DigitsDataModule
from apa_lightning.data.in_memory import ImageTensorDataset
from apa_lightning.data.mnist import IDX_FILES, FashionMNISTDataModule, MNISTDataModule, import_idx_files
from apa_lightning.errors import ApaError

from .conftest import write_idx


def _labels(dataset: ImageTensorDataset) -> list[int]:
    return dataset.labels.tolist()


def test_digits_split_is_seeded_disjoint_and_complete():
    a, b, c = (DigitsDataModule(split_seed=s) for s in (1, 1, 2))
    for dm in (a, b, c):
        dm.setup()
    assert (len(a.train_set), len(a.val_set), len(a.test_set)) == (1257, 180, 360)
    assert torch.equal(a.val_set.images, b.val_set.images)
    assert not torch.equal(a.val_set.images, c.val_set.images)
    rows = {tuple(img.flatten().tolist()) for s in (a.train_set, a.val_set, a.test_set) for img in s.images}
    assert len(rows) > 1700  # the parts do not share images (a few digits are pixel-identical)
    assert a.train_set.images.shape[1:] == (1, 28, 28) and a.train_set.images.dtype == torch.uint8
    border = a.train_set.images[:, :, :3, :]
    assert border.max() == 0  # centred with an empty border, like MNIST


def test_batches_are_served_whole_and_become_floats_on_the_device():
    dm = DigitsDataModule(batch_size=32, image_size=32, channels=3)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].dtype == torch.uint8 and batch[0].shape == (32, 1, 28, 28)
    x, y = dm.on_after_batch_transfer(batch, 0)
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and y.dtype == torch.long


def test_declared_shape_that_the_data_cannot_serve_is_refused():
    with pytest.raises(ApaError, match="data.channels=1"):
        DigitsDataModule(channels=2).setup()
    with pytest.raises(ApaError, match="data.num_classes=10"):
        DigitsDataModule(num_classes=7).setup()


def test_source_dir_idx_files_are_imported_and_read_by_torchvision(tmp_path, idx_source):
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False, source_dir=str(idx_source), val_size=10)
    dm.prepare_data()
    assert sorted(p.name for p in dm.raw_dir.iterdir()) == sorted(IDX_FILES)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 20)
    assert dm.test_set.labels.tolist() == [i % 10 for i in range(20)]
    assert dm.classes[0].startswith("0")
    # the validation split is the seeded permutation, the same in a second datamodule
    again = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False, val_size=10)
    again.setup()
    assert torch.equal(again.val_set.images, dm.val_set.images)


def test_fashion_mnist_reads_its_own_folder(tmp_path, idx_source):
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), download=False, source_dir=str(idx_source), val_size=5)
    dm.prepare_data()
    dm.setup()
    assert dm.raw_dir == tmp_path / "FashionMNIST" / "raw"
    assert dm.classes[0] == "T-shirt/top" and len(dm.train_set) == 35


def test_source_dir_missing_files_are_named(tmp_path, idx_source):
    (idx_source / "t10k-labels-idx1-ubyte.gz").unlink()
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), source_dir=str(idx_source))
    with pytest.raises(ApaError, match=r"lacks t10k-labels-idx1-ubyte\(\.gz\)"):
        dm.prepare_data()


def test_missing_data_without_download_names_folder_and_ways_out(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(ApaError) as err:
        dm.setup()
    message = str(err.value)
    assert f"{tmp_path} (expected MNIST/raw/ with train-images-idx3-ubyte" in message
    assert "downloading is off" in message and "data.source_dir" in message


def test_failed_download_becomes_the_same_clear_error(tmp_path):
    # the real torchvision download code runs and fails at once, as offline (see conftest)
    dm = MNISTDataModule(data_dir=str(tmp_path), download=True)
    with pytest.raises(ApaError, match="could not be downloaded") as err:
        dm.prepare_data()
    assert err.value.__cause__ is not None


def gz_bytes(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and (p.name.startswith(".") or p.suffix in (".partial", ".tmp"))]


@pytest.mark.parametrize("damage", ["truncated", "not gzip"])
def test_a_corrupt_gz_in_source_dir_is_named_and_nothing_is_left_behind(tmp_path, idx_source, damage):
    bad = idx_source / "train-images-idx3-ubyte.gz"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a gzip file" * 10)
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False, source_dir=str(idx_source))
    with pytest.raises(ApaError, match=f"data.source_dir file {bad} cannot be read .* truncated or corrupt"):
        dm.prepare_data()
    assert not (dm.raw_dir / "train-images-idx3-ubyte").exists() and not leftovers(tmp_path / "data")


@pytest.mark.parametrize(
    "name, header, reason",
    [
        (
            "t10k-labels-idx1-ubyte",
            struct.pack(">HBBI", 0x1234, 0x08, 1, 20),
            "its magic number is 12340801, not 00000801",
        ),
        (
            "t10k-labels-idx1-ubyte",
            struct.pack(">HBBI", 0, 0x08, 1, 25),
            "its header declares 25 values but 20 bytes follow",
        ),
        ("train-images-idx3-ubyte", struct.pack(">HBB3I", 0, 0x08, 3, 40, 32, 32), "it holds 32x32 images, not 28x28"),
        ("train-images-idx3-ubyte", struct.pack(">HBB", 0, 0x0D, 3), "its magic number is 00000d03"),  # float32
    ],
)
def test_a_file_that_is_not_mnists_idx_format_is_named_and_never_kept(tmp_path, idx_source, name, header, reason):
    good = gz_bytes(idx_source / f"{name}.gz")
    ndim = 3 if "images" in name else 1
    (idx_source / f"{name}.gz").write_bytes(gzip.compress(header + good[4 + 4 * ndim :]))
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False, source_dir=str(idx_source), val_size=10)
    with pytest.raises(ApaError, match=f"{idx_source / name}.gz is not a valid MNIST IDX file: {reason}"):
        dm.prepare_data()
    assert not (dm.raw_dir / name).exists() and not leftovers(tmp_path / "data")
    # once the good file is back, the next run imports it and trains on it
    (idx_source / f"{name}.gz").write_bytes(gzip.compress(good))
    dm.prepare_data()
    dm.setup()
    assert len(dm.test_set) == 20


def test_images_and_labels_of_different_lengths_are_refused_and_not_kept(tmp_path, idx_source):
    write_idx(idx_source / "t10k-labels-idx1-ubyte", np.arange(19) % 10, compress=True)
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False, source_dir=str(idx_source))
    with pytest.raises(ApaError, match=r"t10k-images-idx3-ubyte.gz \(20 images\) and .*t10k-labels-idx1-ubyte.gz \(19"):
        dm.prepare_data()
    assert not (dm.raw_dir / "t10k-labels-idx1-ubyte").exists() and not (dm.raw_dir / "t10k-images-idx3-ubyte").exists()


def test_a_damaged_file_already_in_data_dir_is_named_or_replaced_from_source_dir(tmp_path, idx_source):
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False, source_dir=str(idx_source), val_size=10)
    dm.prepare_data()
    damaged = dm.raw_dir / "train-images-idx3-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:1000])  # e.g. a disk that filled up under an older version
    reader = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False, val_size=10)
    with pytest.raises(ApaError, match=f"{damaged} is not a valid MNIST IDX file: its size is 1000 bytes"):
        reader.setup()
    dm.prepare_data()  # with data.source_dir the damaged copy is imported again
    dm.setup()
    assert len(dm.train_set) == 30


def test_runs_importing_into_the_same_data_dir_at_once_do_not_collide(tmp_path, idx_source, monkeypatch):
    """Two processes copy every file side by side and rename only when both have written it: with one shared
    temporary name the second rename fails (its file is gone), with one name per process both succeed."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2, timeout=30)
    real_open = gzip.open

    class Stalling:  # a .gz reader that waits for the other process at the end of each file
        def __init__(self, *args, **kwargs):
            self.stream = real_open(*args, **kwargs)

        def read(self, size=-1):
            data = self.stream.read(size)
            if not data:
                barrier.wait()
            return data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

    monkeypatch.setattr(gzip, "open", Stalling)
    raw = tmp_path / "data" / "MNIST" / "raw"
    workers = [context.Process(target=import_idx_files, args=(idx_source, raw)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX_FILES)
    assert gz_bytes(idx_source / "train-images-idx3-ubyte.gz") == (raw / "train-images-idx3-ubyte").read_bytes()


def test_grey_images_repeated_to_three_channels_train_an_autoencoder(make_cfg):
    from apa_lightning.tasks.train import train

    cfg = make_cfg("model=ae", "data.channels=3", "data.batch_size=4", "trainer=debug", "logger=csv")
    train(cfg)  # torchmetrics' SSIM failed on the stride-0 view that expand() gives
    dm = DigitsDataModule(channels=3, batch_size=4)
    dm.setup()
    x, _ = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert x.is_contiguous() and torch.equal(x[:, 0], x[:, 2])


def test_grey_images_served_as_rgb_are_three_channels_of_their_own():
    dm = DigitsDataModule(channels=3, normalize="none")  # no normalisation: nothing after the repeat copies
    stored = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    x = dm.float_images(stored)
    assert x.shape == (4, 3, 28, 28) and x.is_contiguous()
    grey = stored[:, 0].float() / 255
    x[:, 0] = 0  # an in-place write into one channel (a noise step, a user transform) stays in that channel
    assert torch.equal(x[:, 1], grey) and torch.equal(x[:, 2], grey)
    assert x.view(4, -1).shape == (4, 3 * 28 * 28)  # torchmetrics calls .view() on images
