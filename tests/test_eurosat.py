import csv
from pathlib import Path

import pytest
import torch

from apa_lightning.data.eurosat import EuroSATDataModule, stratified_split
from apa_lightning.errors import ApaError
from apa_lightning.nets.backbones import alexnet, mobilenet_v2
from apa_lightning.nets.fusion import MiddleFusion
from apa_lightning.tasks.train import train

from .conftest import EUROSAT_CLASSES, fill_value
from .test_configs import EXPERIMENTS


def split_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(open(path)))[1:]


def test_split_is_stratified_deterministic_and_written(eurosat_root, tmp_path):
    dm = EuroSATDataModule(data_dir=str(eurosat_root), download=False, split_dir=str(tmp_path / "a"))
    dm.setup()
    assert dm.classes == EUROSAT_CLASSES
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (70, 10, 20)
    for part, per_class in ((dm.train_set, 7), (dm.val_set, 1), (dm.test_set, 2)):
        assert torch.bincount(part.labels, minlength=10).tolist() == [per_class] * 10
    assert dm.train_set.images.shape[1:] == (3, 64, 64) and dm.train_set.images.dtype == torch.uint8

    rows = split_rows(tmp_path / "a" / "data_split.csv")
    assert len(rows) == 100 and len({r[1] for r in rows}) == 100
    assert sum(r[0] == "test" for r in rows) == 20 and rows[0][1].startswith(rows[0][2] + "/")
    same = EuroSATDataModule(data_dir=str(eurosat_root), download=False, split_dir=str(tmp_path / "b"))
    same.setup()
    assert split_rows(tmp_path / "b" / "data_split.csv") == rows
    other = EuroSATDataModule(data_dir=str(eurosat_root), download=False, split_seed=7, split_dir=str(tmp_path / "c"))
    other.setup()
    assert split_rows(tmp_path / "c" / "data_split.csv") != rows


def test_stratified_split_keeps_class_proportions_for_uneven_classes():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, val, test = stratified_split(labels, [0.7, 0.1, 0.2], seed=0)
    assert [torch.bincount(labels[p], minlength=3).tolist() for p in (train, val, test)] == [
        [35, 21, 14],
        [5, 3, 2],
        [10, 6, 4],
    ]
    assert len(set(torch.cat([train, val, test]).tolist())) == 100


def test_bad_fractions_and_missing_data_are_clear_errors(tmp_path):
    with pytest.raises(ApaError, match="summing to 1"):
        EuroSATDataModule(data_dir=str(tmp_path), fractions=[0.5, 0.1, 0.1])
    with pytest.raises(ApaError, match=r"eurosat/2750 .* downloading is off"):
        EuroSATDataModule(data_dir=str(tmp_path), download=False).setup()
    with pytest.raises(ApaError, match="could not be downloaded"):
        EuroSATDataModule(data_dir=str(tmp_path), download=True).prepare_data()


@pytest.mark.parametrize("size", [64, 224])
def test_fusion_gives_one_logit_per_class_and_trains_only_its_classifier_when_frozen(size):
    net = MiddleFusion(num_classes=10, pretrained=False, hidden=[32])
    assert net(torch.rand(2, 3, size, size)).shape == (2, 10)
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("classifier.") for name in trainable)
    assert all(p.requires_grad for p in MiddleFusion(pretrained=False, freeze="none").parameters())


@pytest.mark.parametrize("freeze", [True, False, "yes", "backbone"])
def test_fusion_takes_the_freeze_vocabulary_of_every_network(freeze):
    with pytest.raises(ApaError, match=f"model.net.freeze={freeze!r}; use one of none, features"):
        MiddleFusion(pretrained=False, freeze=freeze)


def test_fusion_refuses_a_bad_freeze_before_it_reads_any_weights(tmp_path):
    # weights that cannot be read: the freeze setting is named first, whatever the torchvision cache holds
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(ApaError, match="model.net.freeze='backbone'; use one of none, features"):
        MiddleFusion(pretrained=True, freeze="backbone", alexnet_weights_path=missing, mobilenet_weights_path=missing)


@pytest.mark.parametrize("builder", [alexnet, mobilenet_v2])
def test_single_backbones_freeze_features_and_replace_the_head(builder):
    net = builder(num_classes=7, freeze="features")
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 7)
    assert all(name.startswith("classifier.") for name, p in net.named_parameters() if p.requires_grad)


def test_both_backbones_load_pretrained_weights_through_the_same_path(fake_imagenet_weights, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(fake_imagenet_weights))
    fusion = MiddleFusion(pretrained=True)
    assert torch.all(fusion.alexnet_features[0][0].weight == fill_value(0))  # alexnet's first tensor
    assert torch.all(fusion.mobilenet_features[0][0].weight == fill_value(0))  # mobilenet_v2's first tensor
    assert torch.all(alexnet(pretrained=True).features[0].weight == fill_value(0))
    assert torch.all(mobilenet_v2(pretrained=True).features[0][0].weight == fill_value(0))


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e.startswith("eurosat_")])
def test_every_eurosat_experiment_runs_a_fast_dev_run(
    make_cfg, eurosat_root, fake_imagenet_weights, experiment, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(fake_imagenet_weights))
    cfg = make_cfg(
        f"experiment={experiment}",
        "trainer=debug",
        "logger=csv",
        f"data.data_dir={eurosat_root}",
        "data.download=false",
        "data.batch_size=4",
        "data.image_size=64",
    )
    train(cfg)
    out = Path(cfg.paths.output_dir)
    assert (out / "classification_report.csv").is_file() and (out / "data_split.csv").is_file()
    names = [row["class"] for row in csv.DictReader(open(out / "classification_report.csv"))]
    # the classes of the one test batch (labels or predictions), in class order, then the averages
    assert names[-2:] == ["macro avg", "weighted avg"] and names[:-2]
    assert names[:-2] == [c for c in EUROSAT_CLASSES if c in names]


@pytest.mark.parametrize("damage", ["truncated", "not an image", "empty"])
def test_a_corrupt_image_is_named(eurosat_root, damage):
    bad = eurosat_root / "eurosat" / "2750" / "Highway" / "Highway_3.jpg"
    data = bad.read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 2], "not an image": b"<html>404</html>", "empty": b""}[damage])
    dm = EuroSATDataModule(data_dir=str(eurosat_root), download=False)
    with pytest.raises(ApaError, match=f"EuroSAT image {bad} cannot be decoded .*; the file is corrupt or truncated"):
        dm.setup()
