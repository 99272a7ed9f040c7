"""Training augmentation per batch on the device, the per-image path it replaces by default, GPU-resident splits
(``data.on_device``) and the augmentation benchmark."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import kornia.augmentation as K
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from apa_lightning.callbacks.epoch_seed import epoch_seed
from apa_lightning.cli.config_checks import check_config
from apa_lightning.data.augmentation import BatchAugmentation, BatchRandomCrop, batched_step
from apa_lightning.data.digits import DigitsDataModule
from apa_lightning.data.font import FontDataModule
from apa_lightning.data.in_memory import DeviceBatches, EpochShuffle, ImageTensorDataset, keep_batch
from apa_lightning.errors import ApaError
from apa_lightning.tasks.train import instantiate_plain, train

NINE = torch.arange(1.0, 10.0).view(1, 1, 3, 3)  # [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def cifar_datamodule(make_cfg, cifar10_root, *overrides: str):
    cfg = make_cfg(
        "data=cifar10",
        f"data.data_dir={cifar10_root}",
        "data.download=false",
        "data.val_size=20",
        "data.batch_size=8",
        "data.num_workers=0",
        *overrides,
    )
    dm = instantiate_plain(cfg.data)
    dm.setup()
    return dm


def training(dm, training: bool = True):
    """``dm`` as Lightning leaves it during a training (or validation/test) batch."""
    dm.trainer = SimpleNamespace(training=training)
    return dm


def test_padded_crop_cuts_every_window_of_the_zero_padded_image():
    padded = torch.tensor(
        [[0, 0, 0, 0, 0], [0, 1, 2, 3, 0], [0, 4, 5, 6, 0], [0, 7, 8, 9, 0], [0, 0, 0, 0, 0]], dtype=torch.float
    )
    windows = {(t, left): padded[t : t + 3, left : left + 3] for t in range(3) for left in range(3)}
    torch.manual_seed(0)
    out = BatchRandomCrop((3, 3), (1, 1, 1, 1))(NINE.expand(64, 1, 3, 3))
    assert out.shape == (64, 1, 3, 3)
    found = [next(k for k, w in windows.items() if torch.equal(img[0], w)) for img in out]
    assert set(found) == set(windows)  # each image its own offset; all nine occur in 64 draws
    assert found.count((1, 1)) < 64


def test_crop_from_torchvision_pads_left_right_and_top_bottom_as_torchvision_does():
    # padding=[1, 0]: one column left and right, no row: a 3x5 image from which 2x3 windows are cut
    step = batched_step("crop", v2.RandomCrop((2, 3), padding=[1, 0], fill=51))
    padded = torch.tensor([[0.2, 1, 2, 3, 0.2], [0.2, 4, 5, 6, 0.2], [0.2, 7, 8, 9, 0.2]])
    windows = [padded[t : t + 2, left : left + 3] for t in range(2) for left in range(3)]
    torch.manual_seed(0)
    out = step(NINE.expand(32, 1, 3, 3))
    assert out.shape == (32, 1, 2, 3)
    hits = [[torch.allclose(img[0], w) for w in windows] for img in out]
    assert all(sum(h) == 1 for h in hits) and all(any(col) for col in zip(*hits, strict=True))


def flip(p: float):
    return batched_step("flip", v2.RandomHorizontalFlip(p))


def test_flip_mirrors_each_image_with_its_own_coin():
    mirrored = torch.tensor([[3.0, 2, 1], [6, 5, 4], [9, 8, 7]])
    assert torch.equal(flip(1.0)(NINE)[0, 0], mirrored)
    assert torch.equal(flip(0.0)(NINE), NINE)
    torch.manual_seed(0)
    out = flip(0.5)(NINE.expand(40, 1, 3, 3))
    flipped = [torch.equal(img[0], mirrored) for img in out]
    assert all(f or torch.equal(img, NINE[0]) for f, img in zip(flipped, out, strict=True))
    assert 10 < sum(flipped) < 30


def test_flip_is_kornias():
    images = torch.rand(64, 3, 5, 5)
    step = flip(0.5)
    assert isinstance(step, K.RandomHorizontalFlip)
    torch.manual_seed(5)
    ours = step(images)
    torch.manual_seed(5)
    assert torch.equal(ours, K.RandomHorizontalFlip(p=0.5)(images))  # kornia's, called directly, same seed


@pytest.mark.parametrize("transform", [v2.RandomHorizontalFlip(0.5), v2.RandomCrop(5, padding=2)])
def test_flip_and_crop_draw_from_the_seeded_global_generator(transform):
    images = torch.rand(64, 3, 5, 5)
    step = batched_step("step", transform)
    outputs = {}
    for name, seed in (("first", 5), ("again", 5), ("other", 6)):
        torch.manual_seed(seed)  # what EpochSeed does at the start of each training epoch
        outputs[name] = step(images)
    # the same seed gives the same draws, another epoch's seed other ones (not a fixed private generator) ...
    assert torch.equal(outputs["first"], outputs["again"]) and not torch.equal(outputs["first"], outputs["other"])
    assert not torch.equal(step(images), step(images))  # ... and the next batch its own


def test_rotation_turns_the_way_torchvision_turns_and_fills_like_it():
    dot = torch.zeros(1, 1, 5, 5)
    dot[0, 0, 0, 1] = 1
    step = batched_step("rotate", v2.RandomRotation((90, 90)))
    assert torch.equal(step(dot).round(), v2.RandomRotation((90, 90))(dot))
    # the corners a 45-degree turn uncovers get the fill (255 in uint8 = 1.0 here), as torchvision's do
    corners = batched_step("rotate", v2.RandomRotation((45, 45), fill=255))(torch.zeros(1, 1, 6, 6))[0, 0]
    assert corners[0, 0] == corners[-1, -1] == 1 and corners[2, 2] == 0


def test_colour_jitter_draws_a_brightness_per_image_within_the_range():
    torch.manual_seed(0)
    out = batched_step("color", v2.ColorJitter(brightness=0.2))(torch.full((16, 3, 4, 4), 0.5))
    per_image = out.flatten(1)
    assert torch.equal(per_image.min(1).values, per_image.max(1).values)  # one factor for the whole image
    assert per_image[:, 0].unique().numel() == 16 and (0.4 <= per_image).all() and (per_image <= 0.6).all()


def test_colour_jitter_leaves_hue_alone_on_grey_images_as_torchvision_does():
    torch.manual_seed(0)
    grey = torch.rand(8, 1, 6, 6)
    step = batched_step("color", v2.ColorJitter(hue=0.3, saturation=0.5))
    assert torch.equal(step(grey), grey)  # kornia alone raises ValueError on 1-channel images
    assert torch.equal(v2.ColorJitter(hue=0.3, saturation=0.5)(grey), grey)
    colour = torch.rand(8, 3, 6, 6)
    assert not torch.allclose(step(colour), colour)  # hue and saturation still act on RGB


@pytest.mark.parametrize("preset, size", [("standard", 32), ("report", 64), ("rotate_flip_crop", 64)])
def test_device_augmentation_gives_every_training_image_its_own_parameters(make_cfg, cifar10_root, preset, size):
    dm = cifar_datamodule(make_cfg, cifar10_root, f"data/augmentation={preset}", f"data.image_size={size}")
    assert dm.train_transform is None and isinstance(dm.batch_augmentation, BatchAugmentation)
    same = dm.train_set.images[:1].expand(16, -1, -1, -1)
    torch.manual_seed(0)
    x, labels = training(dm).on_after_batch_transfer((same, torch.zeros(16)), 0)
    assert x.shape == (16, 3, size, size) and x.dtype == torch.float32
    distinct = {tuple(img.flatten().tolist()) for img in x}
    assert len(distinct) >= 14  # a few standard draws may repeat (81 offsets x 2 flips)
    plain = dm.float_images(same)
    assert not any(torch.allclose(img, plain[0]) for img in x)
    # normalised by the training split's statistics after the augmentation: [0, 1] mapped by (v - mean) / std
    mean, std = torch.tensor(dm.mean).view(3, 1, 1), torch.tensor(dm.std).view(3, 1, 1)
    raw = x * std + mean
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_validation_and_test_batches_are_never_augmented(make_cfg, cifar10_root):
    dm = cifar_datamodule(make_cfg, cifar10_root, "data/augmentation=report", "data.image_size=64")
    batch = next(iter(dm.val_dataloader()))
    x, _ = training(dm, training=False).on_after_batch_transfer(batch, 0)
    assert torch.equal(x, dm.float_images(batch[0]))
    x_train, _ = training(dm, training=True).on_after_batch_transfer(batch, 0)
    assert not torch.allclose(x_train, x)


def test_a_fixed_seed_gives_the_same_augmented_batch(make_cfg, cifar10_root, monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # an earlier seeded run's: this loader is unseeded
    dm = training(cifar_datamodule(make_cfg, cifar10_root, "data/augmentation=report", "data.image_size=64"))
    batch = next(iter(dm.train_dataloader()))
    first, second, other = [], [], []
    for seed, out in ((5, first), (5, second), (6, other)):
        torch.manual_seed(seed)  # what EpochSeed reseeds at each training epoch
        out.append(dm.on_after_batch_transfer(batch, 0)[0])
    assert torch.equal(first[0], second[0]) and not torch.equal(first[0], other[0])


def test_flips_follow_the_runs_seed_and_differ_from_batch_to_batch_and_epoch_to_epoch():
    flip = {"flip": {"_target_": "torchvision.transforms.v2.RandomHorizontalFlip"}}
    ramp = (torch.arange(28, dtype=torch.uint8) * 9).expand(32, 1, 28, 28)  # dark left, bright right

    def flipped(dm) -> tuple[bool, ...]:
        x = dm.on_after_batch_transfer((ramp, torch.zeros(32)), 0)[0]
        mirrored = x[:, 0, 0, 0] > x[:, 0, 0, -1]
        assert all(
            torch.equal(img[0], ramp[0, 0].float().div(255).flip(-1) if m else ramp[0, 0] / 255)
            for img, m in zip(x, mirrored, strict=True)
        )  # each image as it was, or mirrored
        return tuple(mirrored.tolist())

    def epoch(dm, seed: int, number: int) -> list[tuple[bool, ...]]:
        torch.manual_seed(epoch_seed(seed, number))  # what EpochSeed does at the start of each training epoch
        return [flipped(dm), flipped(dm)]  # two batches

    dm = training(DigitsDataModule(augmentation=flip, normalize="none"))
    first, second = epoch(dm, 7, 0), epoch(dm, 7, 1)
    assert 0 < sum(first[0]) < 32  # a coin per image
    assert first[0] != first[1] and first != second  # the next batch, the next epoch: other coins
    assert epoch(dm, 7, 0) == first  # the same epoch of the same seed again: the same flips (a resumed run)
    assert epoch(training(DigitsDataModule(augmentation=flip, normalize="none")), 7, 0) == first  # in a new process too
    assert epoch(dm, 8, 0) != first  # another seed, other flips


def test_augment_on_workers_keeps_the_per_image_path(make_cfg, cifar10_root):
    dm = cifar_datamodule(make_cfg, cifar10_root, "data/augmentation=standard", "data.augment_on=workers")
    assert dm.batch_augmentation is None and isinstance(dm.train_transform, v2.Compose)
    torch.manual_seed(0)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8
    assert not any(torch.equal(img, orig) for img in images for orig in dm.train_set.images)
    # the device does not augment a second time
    x, _ = training(dm).on_after_batch_transfer((images, None), 0)
    assert torch.equal(x, dm.float_images(images))


def test_steps_without_a_batched_counterpart_are_refused_by_name():
    with pytest.raises(ApaError, match=r"data.augmentation.blur \(GaussianBlur\).*data.augment_on=workers"):
        BatchAugmentation({"blur": v2.GaussianBlur(3)})
    with pytest.raises(ApaError, match="data.augmentation.crop .*pad_if_needed"):
        batched_step("crop", v2.RandomCrop(8, pad_if_needed=True))


def test_a_recipe_from_yaml_gives_torchvision_plain_lists():
    crop = OmegaConf.create(
        {"crop": {"_target_": "torchvision.transforms.v2.RandomCrop", "size": 28, "padding": [4, 2]}}
    )
    for augment_on in ("device", "workers"):  # RandomCrop refuses a ListConfig padding
        DigitsDataModule(augmentation=crop, augment_on=augment_on)


def test_normalisation_tensors_are_made_once_per_device_and_values():
    dm = DigitsDataModule(normalize="dataset")
    dm.setup("fit")
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    first, again = dm.float_images(x), dm.float_images(x)
    assert torch.equal(first, again) and len(dm._stats) == 1
    mean, std = dm._stats_on(torch.device("cpu"))
    assert torch.allclose(first, (x.float() / 255 - dm.mean[0]) / dm.std[0])
    assert dm._stats_on(torch.device("cpu"))[0] is mean  # the same tensors, not new ones per batch
    dm.mean = [0.5]  # changed values (a checkpoint's saved statistics) are not served from the old ones
    assert dm._stats_on(torch.device("cpu"))[0].item() == 0.5


def test_bad_switches_get_one_clear_error(make_cfg):
    with pytest.raises(ApaError, match="data.augment_on=gpu is not allowed: .* device or workers"):
        check_config(make_cfg("data.augment_on=gpu"))
    with pytest.raises(ApaError, match="data.on_device=true .* set data.num_workers=0 \\(got 2\\)"):
        DigitsDataModule(on_device=True, num_workers=2)
    flip = {"flip": {"_target_": "torchvision.transforms.v2.RandomHorizontalFlip"}}
    refused = "data.on_device=true with data.augment_on=workers would train without augmentation.*augment_on=device"
    with pytest.raises(ApaError, match=refused):
        DigitsDataModule(on_device=True, augment_on="workers", augmentation=flip)
    with pytest.raises(ApaError, match=refused):
        check_config(make_cfg("data.on_device=true", "data.augment_on=workers", "data/augmentation=standard"))
    # without a step there is nothing to drop; with augment_on=device the recipe runs on the device
    check_config(make_cfg("data.on_device=true", "data.augment_on=workers"))  # data/augmentation=none
    check_config(make_cfg("data.on_device=true", "data.augment_on=device", "data/augmentation=standard"))
    DigitsDataModule(on_device=True, augment_on="workers", augmentation={"flip": None})
    with pytest.raises(ApaError, match="data=font already serves its 32 glyphs as one batch"):
        FontDataModule(on_device=True, image_size=7, channels=1, num_classes=32)
    # the font's batches become passes on the device, never augmented there: not silently dropped
    with pytest.raises(ApaError, match="data=font augments its glyphs per image on the loader only"):
        FontDataModule(augmentation=flip, image_size=7, channels=1, num_classes=32)
    FontDataModule(augmentation=flip, augment_on="workers", image_size=7, channels=1, num_classes=32)
    dm = instantiate_plain(make_cfg("data.on_device=true").data)
    dm.setup()
    dm.trainer = SimpleNamespace(world_size=2)
    with pytest.raises(ApaError, match="data.on_device=true serves one process .* 2 \\(DDP\\)"):
        dm.val_dataloader()


def test_device_batches_draw_every_index_once_per_epoch_in_the_seeded_order():
    dataset = ImageTensorDataset(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10))
    sampler = EpochShuffle(10, seed=3)
    batches = DeviceBatches(dataset.images, dataset.labels, batch_size=4, shuffle=True, sampler=sampler)
    assert len(batches) == 3
    orders = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        served = list(batches)
        assert [len(labels) for _, labels in served] == [4, 4, 2]
        order = torch.cat([labels for _, labels in served])
        assert sorted(order.tolist()) == list(range(10))
        assert torch.equal(torch.cat([images for images, _ in served]).flatten().long(), order)
        # the same batches as the DataLoader path for this seed and epoch
        loader = DataLoader(dataset, batch_size=4, sampler=EpochShuffle(10, seed=3, epoch=epoch), collate_fn=keep_batch)
        assert torch.equal(order, torch.cat([labels for _, labels in loader]))
        orders.append(order.tolist())
    assert orders[0] != orders[1]
    in_order = DeviceBatches(dataset.images, dataset.labels, batch_size=4, shuffle=False)
    assert torch.cat([labels for _, labels in in_order]).tolist() == list(range(10))


TINY = [
    "model=ae",
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "logger=csv",
    "seed=7",
    "data/augmentation=standard",
]


@pytest.mark.slow  # two short training runs
def test_training_on_device_resident_digits_matches_the_dataloader_path(make_cfg, monkeypatch):
    served = []
    original_iter = DeviceBatches.__iter__
    monkeypatch.setattr(DeviceBatches, "__iter__", lambda self: served.append(len(self)) or original_iter(self))
    records, weights = [], []
    for on_device in ("true", "false"):
        cfg = make_cfg(*TINY, f"data.on_device={on_device}")
        train(cfg)
        out = Path(cfg.paths.output_dir)
        records.append(json.loads((out / "metrics.json").read_text()))
        weights.append(torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    # train (79 batches of 16 for 1,257 images), sanity check + val (12 of 16), test (23 of 16): only with on_device
    assert 79 in served and 12 in served and 23 in served
    for name in weights[1]:
        torch.testing.assert_close(weights[0][name], weights[1][name], atol=1e-6, rtol=0, msg=name)
    device, loader = records
    assert device["status"] == "completed" and device["epochs"] == 2
    assert device["test"] == pytest.approx(loader["test"], abs=1e-6)


def test_augmentation_benchmark_runs_both_paths(monkeypatch, capsys):
    script = Path(__file__).parents[1] / "benchmarks" / "augmentation.py"
    argv = [str(script), "--images", "16", "--batch-size", "8", "--rounds", "1", "--workers", "0"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(script), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("synthetic CIFAR-shaped data: 16 random uint8 images of 3x32x32 (not CIFAR-10)")
    assert [line.split()[:2] for line in lines[1:3]] == [["standard", "32"], ["report", "224"]]
    assert all("images/s" in line and "device/workers" in line for line in lines[1:3])
    # the hand-written flip and crop against kornia's, at both sizes
    steps = [["flip", "32"], ["crop", "32"], ["flip", "224"], ["crop", "224"]]
    assert [line.split()[:2] for line in lines[3:]] == steps
    assert all("hand-written" in line and "kornia/hand-written" in line for line in lines[3:])


def test_presets_keep_their_steps_in_order():
    conf = Path(__file__).parents[1] / "conf" / "data" / "augmentation"
    assert list(OmegaConf.load(conf / "standard.yaml")) == ["resize", "crop", "flip"]
    assert list(OmegaConf.load(conf / "report.yaml")) == ["resize", "rotate", "flip", "crop", "affine", "color"]
