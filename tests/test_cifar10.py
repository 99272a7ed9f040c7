import json
from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from apa_lightning.data.cifar10 import CIFAR10DataModule
from apa_lightning.data.in_memory import channel_stats
from apa_lightning.errors import ApaError
from apa_lightning.tasks.eda import explore
from apa_lightning.tasks.train import instantiate_plain

from .conftest import CIFAR_CLASSES
from .test_figures import grid_size


def test_cifar10_is_read_through_torchvision_and_split(cifar10_root):
    dm = CIFAR10DataModule(data_dir=str(cifar10_root), download=False, val_size=20, image_size=32, channels=3)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (80, 20, 20)
    assert dm.classes == CIFAR_CLASSES
    assert dm.train_set.images.shape[1:] == (3, 32, 32) and dm.train_set.images.dtype == torch.uint8
    # normalised by the training split's own statistics
    assert dm.mean == pytest.approx(channel_stats(dm.train_set.images)[0])
    x, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (64, 3, 32, 32)


def test_channel_stats_match_torch_on_float_images():
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk=7)
    floats = images.double() / 255
    assert mean == pytest.approx(floats.mean(dim=(0, 2, 3)).tolist())
    assert std == pytest.approx(floats.permute(1, 0, 2, 3).flatten(1).std(dim=1, unbiased=False).tolist())


@pytest.mark.parametrize("preset, size", [("none", 32), ("standard", 32), ("report", 64)])
def test_augmentation_presets_change_training_images_only(make_cfg, cifar10_root, preset, size):
    def datamodule(*overrides: str):
        cfg = make_cfg(
            "data=cifar10",
            f"data/augmentation={preset}",
            f"data.image_size={size}",
            "data.val_size=20",
            f"data.data_dir={cifar10_root}",
            "data.download=false",
            "data.batch_size=8",
            "data.num_workers=0",
            "data.augment_on=workers",  # the loader augments; the device path: tests/test_augmentation.py
            *overrides,
        )
        dm = instantiate_plain(cfg.data)
        dm.setup()
        return dm, list(cfg.data.augmentation or {})

    dm, steps = datamodule()
    torch.manual_seed(0)
    train_images, _ = next(iter(dm.train_dataloader()))
    assert train_images.shape == (8, 3, size, size) and train_images.dtype == torch.uint8
    val_images, _ = next(iter(dm.val_dataloader()))
    assert torch.equal(val_images, dm.val_set.images[:8])  # never augmented
    # every training image, at the batch's size: what the augmentation would give without its random steps
    resize = v2.Resize(size, antialias=True)
    originals = [resize(image) for image in dm.train_set.images]
    if preset == "none":
        assert dm.train_transform is None
        assert all(any(torch.equal(img, orig) for orig in originals) for img in train_images)
    else:
        assert not any(torch.equal(img, orig) for img in train_images for orig in originals)
        # with the random steps switched off the same comparison finds every image: it can tell them apart
        plain, _ = datamodule(*(f"data.augmentation.{k}=null" for k in steps if k != "resize"))
        plain_images, _ = next(iter(plain.train_dataloader()))
        assert all(any(torch.equal(img, orig) for orig in originals) for img in plain_images)


def test_missing_cifar10_names_the_folder_and_files(tmp_path):
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=True, channels=3, image_size=32)
    with pytest.raises(ApaError, match="could not be downloaded") as err:
        dm.prepare_data()
    assert f"{tmp_path} (expected cifar-10-batches-py/ with data_batch_1..5" in str(err.value)


def test_eda_writes_grid_distribution_and_channel_statistics(make_cfg, cifar10_root):
    cfg = make_cfg(
        "task=eda",
        "data=cifar10",
        f"data.data_dir={cifar10_root}",
        "data.download=false",
        "data.val_size=20",
        "eda.samples_per_class=3",
    )
    summary = explore(cfg)
    out = Path(cfg.paths.output_dir)
    assert summary["counts"]["test"] == [2] * 10 and sum(summary["counts"]["train"]) == 80
    assert json.loads((out / "dataset_summary.json").read_text())["classes"] == CIFAR_CLASSES
    assert len(summary["train_channel_mean"]) == 3 and all(0 < s < 0.5 for s in summary["train_channel_std"])
    from PIL import Image

    # a row of 3 per class under its name, drawn 64 pixels (2 x 32), under a title
    assert Image.open(out / "samples_per_class.png").size == grid_size(CIFAR_CLASSES, 3, 10, (64, 64), top_lines=1)
    assert (out / "class_distribution.png").is_file()


def test_a_run_refused_at_start_records_its_error_in_metrics_json(monkeypatch, capsys, tmp_path):
    import sys

    from apa_lightning.cli.main import cli

    monkeypatch.setattr(sys, "argv", ["apa_lightning", "task=eda", "data=cifar10", f"paths.root_dir={tmp_path}"])
    with pytest.raises(SystemExit) as exit_status:
        cli()  # offline, no CIFAR-10 under data/: refused once the run directory exists
    assert exit_status.value.code == 1
    paragraph = capsys.readouterr().err.strip()
    assert paragraph.startswith("error: ") and "cifar" in paragraph.lower()
    (run_dir,) = (tmp_path / "outputs" / "runs" / "eda_cifar10").iterdir()
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"] == paragraph.removeprefix("error: ")
    assert record["task_name"] == "eda_cifar10" and record["run_dir"] == str(run_dir)
