"""The CIFAR-10 and EuroSAT experiments compose to the settings their reports state (practical work 1, 001;
practical assignment 2, 004), and their networks have the reports' layers."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from apa_lightning.data.in_memory import ImageTensorDataset
from apa_lightning.errors import user_error
from apa_lightning.nets.backbones import vgg16
from apa_lightning.tasks.train import instantiate_plain

from .conftest import fill_value

CONF = Path(__file__).resolve().parents[1] / "conf"
VGG16_REPORT_MEAN, VGG16_REPORT_STD = [0.4915, 0.4823, 0.4468], [0.2470, 0.2435, 0.2616]


def conv_widths(net: nn.Module) -> list[int]:
    return [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]


def linear_shapes(head: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in head.modules() if isinstance(m, nn.Linear)]


def parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def build_net(cfg, **changes) -> nn.Module:
    """The experiment's network, on the meta device (shapes without memory) unless ``device`` is given."""
    device = changes.pop("device", "meta")
    with torch.device(device):
        return instantiate(cfg.model.net, **changes)


def augmentation(cfg) -> dict:
    return OmegaConf.to_container(cfg.data.augmentation, resolve=True) or {}


# ---- practical work 1, part I: the CIFAR-10 CNNs ----------------------------------------------------------------

# experiment -> conv widths, FC layers, dropout of the FC layers, weight decay, parameters at 32 px / 10 classes
CNNS = {
    "cifar10_cnn_base": ([8, 32, 16], [(256, 128), (128, 10)], [0.5], 0.0, 41_370),
    "cifar10_cnn_v2": ([16, 32, 64, 128], [(512, 256), (256, 10)], [0.4], 0.0, 231_818),
    "cifar10_cnn_v3": ([16, 32, 64, 128, 512], [(512, 256), (256, 10)], [0.2, 0.3, 0.4, 0.4, 0.5, 0.5], 1e-4, 823_178),
}


@pytest.mark.parametrize("experiment", CNNS)
def test_cifar10_cnns_are_the_reports_adam_25_epochs_without_augmentation(make_cfg, experiment):
    widths, fc, dropouts, weight_decay, count = CNNS[experiment]
    cfg = make_cfg(f"experiment={experiment}")
    assert cfg.trainer.max_epochs == 25
    assert (cfg.model.optimizer._target_, cfg.model.optimizer.lr) == ("torch.optim.Adam", 0.001)
    assert cfg.model.optimizer.weight_decay == weight_decay and cfg.model.get("scheduler") is None
    assert cfg.model.label_smoothing == 0.0  # plain cross-entropy
    assert (cfg.data.image_size, cfg.data.normalize, cfg.data.num_classes) == (32, "dataset", 10)
    assert augmentation(cfg) == {}  # the report lists no augmentation
    net = build_net(cfg, device="cpu")
    assert conv_widths(net) == widths and linear_shapes(net.classifier) == fc
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == dropouts
    assert parameters(net) == count
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_cnn_v3_is_v2_plus_a_fifth_block_of_512(make_cfg):
    v2 = build_net(make_cfg("experiment=cifar10_cnn_v2"))
    v3 = build_net(make_cfg("experiment=cifar10_cnn_v3"))
    assert conv_widths(v3) == [*conv_widths(v2), 512]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in v3.modules()) == 5


def test_cifar10_cnn_augmentation_is_one_override_away(make_cfg):
    cfg = make_cfg("experiment=cifar10_cnn_v2", "data/augmentation=standard")
    steps = augmentation(cfg)
    assert list(steps) == ["resize", "crop", "flip"] and steps["crop"]["padding"] == 4


# ---- practical assignment 2, §2.1-2.2: VGG16 from scratch and pretrained -----------------------------------------


def composed(cfg) -> dict[str, object]:
    """The run's settings as flat ``key: value`` pairs, without its name, tags and paths."""
    flat: dict[str, object] = {}

    def walk(node, prefix=""):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in ("paths", "task_name", "tags", "hydra"):
        plain.pop(key, None)
    walk(plain)
    run_dir = str(cfg.paths.output_dir)  # where this run writes: differs between any two runs
    return {k: v for k, v in flat.items() if not (isinstance(v, str) and v.startswith(run_dir))}


def test_vgg16_scratch_is_64_px_with_the_reports_normalisation_and_nothing_else(make_cfg):
    cfg = make_cfg("experiment=cifar10_vgg16_scratch")
    assert (cfg.data.image_size, cfg.data.batch_size, cfg.trainer.max_epochs) == (64, 64, 50)
    assert cfg.data.normalize == "fixed"
    assert (list(cfg.data.mean), list(cfg.data.std)) == (VGG16_REPORT_MEAN, VGG16_REPORT_STD)
    assert augmentation(cfg) == {}
    assert (cfg.model.optimizer._target_, cfg.model.optimizer.lr) == ("torch.optim.SGD", 0.01)
    assert cfg.model.scheduler._target_ == "torch.optim.lr_scheduler.ReduceLROnPlateau"
    assert cfg.model.net.pretrained is False and cfg.model.net.freeze == "none"
    net = build_net(cfg)
    assert linear_shapes(net.classifier) == [(25088, 4096), (4096, 4096), (4096, 10)]
    assert parameters(net) == 134_301_514


def test_vgg16_pretrained_changes_only_the_weights_and_the_epochs(make_cfg):
    scratch = composed(make_cfg("experiment=cifar10_vgg16_scratch"))
    pretrained = composed(make_cfg("experiment=cifar10_vgg16_pretrained"))
    assert scratch.keys() == pretrained.keys()
    differences = {k: (scratch[k], pretrained[k]) for k in scratch if scratch[k] != pretrained[k]}
    assert differences == {"model.net.pretrained": (False, True), "trainer.max_epochs": (50, 30)}


def test_fixed_normalisation_uses_the_given_mean_and_std(make_cfg):
    cfg = make_cfg("experiment=cifar10_vgg16_pretrained", "data.image_size=8")
    data = instantiate_plain(cfg.data)
    images = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    split = ImageTensorDataset(images, torch.zeros(2, dtype=torch.long))
    data.set_splits(split, split, split)
    out = data.float_images(images)
    expected = (1 - torch.tensor(VGG16_REPORT_MEAN)) / torch.tensor(VGG16_REPORT_STD)
    assert out.shape == (2, 3, 8, 8)
    assert torch.allclose(out[0, :, 0, 0], expected)
    assert data.state_dict()["mean"] == VGG16_REPORT_MEAN  # what task=predict reuses


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.normalize=fixed"], "data.normalize=fixed needs data.mean and data.std, one number per channel (3)"),
        (["data.normalize=fixed", "data.mean=[0.5,0.5]", "data.std=[0.2,0.2,0.2]"], "need 3 finite numbers each"),
        (["data.normalize=fixed", "data.mean=[0.5,0.5,0.5]", "data.std=[0.2,0,0.2]"], "every std above 0"),
        (["data.normalize=fixed", "data.mean=[a,b,c]", "data.std=[0.2,0.2,0.2]"], "need 3 finite numbers each"),
        (["data.normalize=fixed", "data.mean=[0.5,0.5,0.5]", "data.std=[0.2,nan,0.2]"], "need 3 finite numbers each"),
        (["data.normalize=fixed", "data.mean=[0.5,inf,0.5]", "data.std=[0.2,0.2,0.2]"], "need 3 finite numbers each"),
        (["data.mean=[0.5,0.5,0.5]"], "data.mean only apply with data.normalize=fixed, but data.normalize=dataset"),
    ],
)
def test_fixed_normalisation_refuses_missing_or_ignored_stats(make_cfg, overrides, message):
    cfg = make_cfg("data=cifar10", *overrides)
    with pytest.raises(InstantiationException) as failed:
        instantiate_plain(cfg.data)
    assert message in user_error(failed.value)  # the one paragraph the command line prints


# ---- practical assignment 2, §2.3: the five VGG16 variants -------------------------------------------------------

ROTATE_FLIP_CROP = ["resize", "rotate", "flip", "crop"]
# variant -> image size, lr, augmentation steps, classifier Linear shapes, LogSoftmax, frozen features, parameters
VARIANTS = {
    1: (224, 0.01, ROTATE_FLIP_CROP, [(25088, 8192), (8192, 4096), (4096, 4096), (4096, 10)], True, True, 270_624_586),
    2: (224, 0.01, ROTATE_FLIP_CROP, [(25088, 2048), (2048, 4096), (4096, 4096), (4096, 10)], True, True, 91_311_946),
    3: (224, 0.01, ROTATE_FLIP_CROP, [(25088, 4096), (4096, 4096), (4096, 10)], False, False, 134_301_514),
    4: (64, 0.05, ROTATE_FLIP_CROP, [(25088, 2048), (2048, 4096), (4096, 4096), (4096, 10)], True, True, 91_311_946),
    5: (
        64,
        0.05,
        [*ROTATE_FLIP_CROP, "affine", "color"],
        [(25088, 2048), (2048, 4096), (4096, 4096), (4096, 10)],
        True,
        True,
        91_311_946,
    ),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_vgg16_variants_are_the_reports_section_2_3(make_cfg, variant):
    size, lr, steps, linears, log_softmax, frozen, count = VARIANTS[variant]
    cfg = make_cfg(f"experiment=cifar10_vgg16_variant{variant}")
    assert cfg.task_name == f"cifar10_vgg16_variant{variant}"
    assert (cfg.data.image_size, cfg.trainer.max_epochs, cfg.model.optimizer.lr) == (size, 25, lr)
    assert cfg.model.net.pretrained is True
    assert (cfg.data.batch_size, cfg.data.normalize, list(cfg.data.mean)) == (64, "fixed", VGG16_REPORT_MEAN)
    recipe = augmentation(cfg)
    assert list(recipe) == steps
    assert recipe["rotate"]["degrees"] == 5 and recipe["flip"]["p"] == 0.5
    assert (recipe["crop"]["size"], recipe["crop"]["padding"]) == (size, 10)
    assert recipe["resize"]["size"] == size
    if variant == 5:  # zoom, shear, brightness, contrast, saturation
        assert (recipe["affine"]["shear"], recipe["affine"]["scale"]) == (10, [0.8, 1.2])
        assert {k: recipe["color"][k] for k in ("brightness", "contrast", "saturation")} == dict.fromkeys(
            ("brightness", "contrast", "saturation"), 0.2
        )
    net = build_net(cfg, pretrained=False)  # the shapes; which layers keep ImageNet weights: the test below
    assert linear_shapes(net.classifier) == linears
    assert isinstance(net.classifier[-1], nn.LogSoftmax) is log_softmax
    assert parameters(net) == count
    trainable = {name.split(".")[0] for name, p in net.named_parameters() if p.requires_grad}
    assert trainable == ({"classifier"} if frozen else {"features", "classifier"})


def test_the_mixed_frozen_vgg16_experiment_is_retired(make_cfg):
    assert not (CONF / "experiment" / "cifar10_vgg16_frozen.yaml").exists()
    variants = sorted(p.stem for p in (CONF / "experiment").glob("cifar10_vgg16_*"))
    assert variants == ["cifar10_vgg16_pretrained", "cifar10_vgg16_scratch"] + [
        f"cifar10_vgg16_variant{i}" for i in range(1, 6)
    ]


def test_vgg16_keeps_torchvisions_last_hidden_layer_when_its_shape_fits(fake_imagenet_weights, monkeypatch):
    # the state dict's tensors: 13 convs (0-25), classifier.0.weight 26, .bias 27, classifier.3.weight 28
    monkeypatch.setenv("TORCH_HOME", str(fake_imagenet_weights))
    net = vgg16(num_classes=10, pretrained=True, hidden_widths=[64, 4096, 4096], log_softmax=True)
    linears = [m for m in net.classifier if isinstance(m, nn.Linear)]
    assert torch.all(linears[2].weight == fill_value(28))  # "the last two layers kept": ImageNet's 4096 -> 4096
    assert not torch.all(linears[0].weight == fill_value(26)) and linears[3].out_features == 10  # new layers


def test_a_log_softmax_head_keeps_the_loss_and_the_probabilities_right():
    torch.manual_seed(0)
    plain = vgg16(num_classes=10, hidden_widths=[16, 8]).eval()
    logged = vgg16(num_classes=10, hidden_widths=[16, 8], log_softmax=True).eval()
    logged.load_state_dict(plain.state_dict())  # LogSoftmax has no parameters: the same network
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 3, 7, 9])
    with torch.no_grad():
        logits, log_probs = plain(x), logged(x)
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(4))  # log-probabilities, not probabilities
    # the classifier's cross-entropy on the output is the NLL of the log-probabilities, as without LogSoftmax
    assert torch.allclose(F.cross_entropy(log_probs, y), F.nll_loss(log_probs, y))
    assert torch.allclose(F.cross_entropy(log_probs, y), F.cross_entropy(logits, y))
    # task=predict's probabilities (softmax of the output) and the predicted classes are unchanged
    assert torch.allclose(log_probs.softmax(1), logits.softmax(1), atol=1e-6)
    assert torch.equal(log_probs.argmax(1), logits.argmax(1))


# ---- practical assignment 2, §2.4: ResNet18 ----------------------------------------------------------------------

# the report's five runs (figure 14): optimizer, lr, epochs, batch size
RESNET18_RUNS = {
    "row1": ("torch.optim.SGD", 0.01, 25, 32),
    "row2": ("torch.optim.SGD", 0.01, 25, 64),
    "row3": ("torch.optim.SGD", 0.001, 15, 64),
    "row4": ("torch.optim.ASGD", 0.01, 25, 64),
    "row5": ("torch.optim.SGD", 0.01, 25, 128),
}


def test_resnet18_report_preset_sweeps_exactly_the_reports_five_runs(make_cfg):
    from .test_sweeps import compose_with_hydra

    sweep = compose_with_hydra("hparams_search=resnet18_report")
    assert sweep.hydra.mode.name == "MULTIRUN"
    assert dict(sweep.hydra.sweeper.params) == {"setting": ",".join(RESNET18_RUNS)}
    assert list(sweep.settings) == list(RESNET18_RUNS)
    for row, (optimizer, lr, epochs, batch_size) in RESNET18_RUNS.items():
        cfg = make_cfg("hparams_search=resnet18_report", f"setting={row}")
        assert cfg.task_name == "cifar10_resnet18_pretrained"
        got = (cfg.model.optimizer._target_, cfg.model.optimizer.lr, cfg.trainer.max_epochs, cfg.data.batch_size)
        assert got == (optimizer, lr, epochs, batch_size)
        assert (cfg.data.image_size, cfg.model.net.pretrained, cfg.model.net.freeze) == (224, True, "none")
        assert list(augmentation(cfg)) == ["resize", "rotate", "flip", "crop", "affine", "color"]
        built = instantiate(cfg.model.optimizer, params=[nn.Parameter(torch.zeros(1))])
        assert type(built).__name__ == optimizer.rsplit(".", 1)[1]


def test_resnet18_grid_keeps_its_name_and_twelve_runs(make_cfg):
    from .test_sweeps import compose_with_hydra

    params = compose_with_hydra("hparams_search=resnet18_grid").hydra.sweeper.params
    assert [len(str(v).split(",")) for v in params.values()] == [2, 2, 3]


def test_resnet18_pretrained_is_the_reports_batch_64_run(make_cfg):
    cfg = make_cfg("experiment=cifar10_resnet18_pretrained")
    optimizer, lr, epochs, batch_size = RESNET18_RUNS["row2"]
    got = (cfg.model.optimizer._target_, cfg.model.optimizer.lr, cfg.trainer.max_epochs, cfg.data.batch_size)
    assert got == (optimizer, lr, epochs, batch_size)
    recipe = augmentation(cfg)
    assert (recipe["affine"]["shear"], recipe["affine"]["scale"]) == (10, [0.8, 1.2])
    assert recipe["color"]["brightness"] == 0.2
    net = build_net(cfg, pretrained=False)
    assert net.fc[1].out_features == 10 and parameters(net) == 11_181_642


# ---- practical work 1, part II: EuroSAT ------------------------------------------------------------------------

# experiment -> image size, normalisation, frozen convolutional layers
EUROSAT = {
    "eurosat_alexnet_scratch": (64, "dataset", False),
    "eurosat_mobilenet_v2_scratch": (64, "dataset", False),
    "eurosat_alexnet_pretrained": (224, "imagenet", True),
    "eurosat_mobilenet_v2_pretrained": (224, "imagenet", True),
    "eurosat_fusion": (224, "imagenet", True),
}


@pytest.mark.parametrize("experiment", EUROSAT)
def test_eurosat_experiments_train_with_part_ones_procedure(make_cfg, experiment):
    size, normalize, frozen = EUROSAT[experiment]
    cfg = make_cfg(f"experiment={experiment}")
    # part I: Adam 1e-3, 25 epochs, cross-entropy
    optimizer = (cfg.model.optimizer._target_, cfg.model.optimizer.lr, cfg.trainer.max_epochs)
    assert optimizer == ("torch.optim.Adam", 0.001, 25)
    assert cfg.model.optimizer.weight_decay == 0.0 and cfg.model.label_smoothing == 0.0
    assert (cfg.data.image_size, cfg.data.normalize, cfg.data.num_classes) == (size, normalize, 10)
    assert list(cfg.data.fractions) == [0.7, 0.1, 0.2]  # 20 % of 27,000: the report's 5,400 test images
    assert augmentation(cfg) == {}
    assert cfg.model.net.pretrained is frozen and cfg.model.net.freeze == ("features" if frozen else "none")
    if experiment != "eurosat_fusion":
        net = build_net(cfg, pretrained=False)
        outputs = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
        assert outputs.out_features == 10
        trainable = {name.split(".")[0] for name, p in net.named_parameters() if p.requires_grad}
        assert trainable == ({"classifier"} if frozen else {"features", "classifier"})


# ---- every experiment above says what the report states and what it does not ---------------------------------

TOUCHED = [*CNNS, "cifar10_vgg16_scratch", "cifar10_vgg16_pretrained", "cifar10_resnet18_pretrained"]
TOUCHED += [f"cifar10_vgg16_variant{i}" for i in VARIANTS] + list(EUROSAT)


@pytest.mark.parametrize("experiment", TOUCHED)
def test_experiment_headers_name_the_section_and_the_unstated_choices(experiment):
    header = "".join(line for line in (CONF / "experiment" / f"{experiment}.yaml").open() if line.startswith("#"))
    text = " ".join(header.replace("#", " ").split())
    assert ("Practical work 1 (001)" if "eurosat" in experiment or "cnn" in experiment else "(004)") in text
    assert "Not stated (our choice" in text
    assert "The report:" in text
    if experiment.startswith("eurosat_"):
        assert "taken from part I" in text
    if "variant" in experiment:
        assert "mCA" in text and ("min" in text or " h " in text)


def test_eval_on_another_data_config_carries_the_fixed_mean_and_std(make_cfg, tmp_path):
    from apa_lightning.runs.checkpoint_lookup import checkpoint_arguments

    run = tmp_path / "vgg16_run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    # a run that set the statistics on its command line: another data config drops those data overrides
    overrides = ["model=vgg16", "data=cifar10", "data.image_size=64", "data.normalize=fixed"]
    overrides += ["data.mean=[0.4915,0.4823,0.4468]", "data.std=[0.2470,0.2435,0.2616]"]
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    trained = make_cfg(*overrides)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(trained))
    argv = checkpoint_arguments(["task=eval", f"ckpt_path={run}/checkpoints/last.ckpt", "data=cifar10"])
    assert "data.normalize=fixed" in argv and "data.image_size=64" in argv
    cfg = make_cfg(*argv)
    assert (list(cfg.data.mean), list(cfg.data.std)) == (VGG16_REPORT_MEAN, VGG16_REPORT_STD)
    assert instantiate_plain(cfg.data).fixed_stats == (VGG16_REPORT_MEAN, VGG16_REPORT_STD)
    # a run without fixed statistics carries no data.mean=None
    (run / ".hydra" / "overrides.yaml").write_text("- experiment=cifar10_cnn_v2\n")
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(make_cfg("experiment=cifar10_cnn_v2")))
    argv = checkpoint_arguments(["task=eval", f"ckpt_path={run}/checkpoints/last.ckpt", "data=cifar10"])
    assert not any(a.startswith(("data.mean", "data.std")) for a in argv)
    assert instantiate_plain(make_cfg(*argv).data).fixed_stats is None
