import pytest
import torch

from apa_lightning.data.digits import DigitsDataModule
from apa_lightning.data.in_memory import ImageTensorDataset
from apa_lightning.data.mnist import IDX_FILES, FashionMNISTDataModule, MNISTDataModule
from apa_lightning.errors import ApaError


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
