from pathlib import Path

import lightning as L
import pytest
from omegaconf import OmegaConf
from torch import nn

from apa_lightning.tasks.train import instantiate_plain

CONF = Path(__file__).resolve().parents[1] / "conf"


def lightning_configs(group: str) -> list[str]:
    """The configs of a group that build a LightningModule / LightningDataModule: all but the detection ones
    (model=yolo, data=kitti configure ultralytics' trainer; tests/test_detection.py checks them)."""
    paths = sorted((CONF / group).glob("*.yaml"))
    return [p.stem for p in paths if not OmegaConf.load(p).get("_target_", "").startswith("apa_lightning.detection.")]


MODELS = lightning_configs("model")
DATA = lightning_configs("data")
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in (CONF / "trainer").glob("*.yaml"))
# pairs that cannot go together, refused when the model is built, with the message that says why
REFUSED = {("vae", "font"): "image_size 7 must be divisible by 4"}  # ConvVAE halves square images twice; 7x5 glyphs


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_and_data_config_instantiates(make_cfg, model, data, fake_imagenet_weights):
    # fake_imagenet_weights: model=fusion loads ImageNet weights by default
    cfg = make_cfg(f"model={model}", f"data={data}")
    assert isinstance(instantiate_plain(cfg.data), L.LightningDataModule)
    if (model, data) in REFUSED:
        with pytest.raises(Exception, match=REFUSED[model, data]):
            instantiate_plain(cfg.model)
        return
    module = instantiate_plain(cfg.model)
    assert isinstance(module, L.LightningModule)
    # hyperparameters are plain containers, so checkpoints load with weights_only=True
    assert type(module.hparams["net"]) is dict and type(module.hparams["optimizer"]) is dict


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(make_cfg, experiment, fake_imagenet_weights):
    cfg = make_cfg(f"experiment={experiment}")
    assert cfg.task_name == experiment
    assert instantiate_plain(cfg.model) is not None


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_preset_composes(make_cfg, trainer):
    cfg = make_cfg(f"trainer={trainer}")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"


@pytest.mark.parametrize("scheduler", sorted(p.stem for p in (CONF / "model" / "scheduler").glob("*.yaml")))
@pytest.mark.parametrize("optimizer", sorted(p.stem for p in (CONF / "model" / "optimizer").glob("*.yaml")))
def test_optimizer_and_scheduler_configs_build(make_cfg, optimizer, scheduler):
    # OneCycleLR takes its length from the trainer when total_steps is null; here no trainer is attached
    steps = ["model.scheduler.total_steps=100"] if scheduler == "onecycle" else []
    if scheduler == "onecycle" and optimizer in ("asgd", "adagrad"):
        steps.append("model.scheduler.cycle_momentum=false")  # ASGD and Adagrad have no momentum to cycle
    cfg = make_cfg(f"model/optimizer={optimizer}", f"model/scheduler={scheduler}", *steps)
    built = instantiate_plain(cfg.model).configure_optimizers()
    assert type(built["optimizer"]).__name__.lower() == optimizer
    assert built["lr_scheduler"]["interval"] == ("step" if scheduler == "onecycle" else "epoch")


def _defaults(config: str) -> dict[str, str]:
    """The group overrides in a config file's defaults list, e.g. {"override /model": "ae"}."""
    entries = OmegaConf.load(CONF / f"{config}.yaml").get("defaults", [])
    return {k: v for entry in entries if not isinstance(entry, str) for k, v in entry.items()}


def test_report_experiments_keep_the_conv_autoencoders_output_batchnorm(make_cfg):
    # model=ae drops the BN before the Sigmoid and trains at 0.01 (the quick default run); the reports'
    # experiments keep the BN and Adam 1e-3
    conv_ae = [e for e in EXPERIMENTS if _defaults(f"experiment/{e}").get("override /model") in ("ae", "dae")]
    assert conv_ae == ["fashion_mnist_ae", "fashion_mnist_dae", "mnist_ae", "mnist_dae", "svhn_ae", "svhn_dae"]
    for experiment in conv_ae:
        cfg = make_cfg(f"experiment={experiment}")
        net = instantiate_plain(cfg.model).net
        assert [type(m) for m in net.decoder[-3:]] == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.Sigmoid], experiment
        assert cfg.model.optimizer.lr == 0.001, experiment
    default = make_cfg()
    assert [type(m) for m in instantiate_plain(default.model).net.decoder[-2:]] == [nn.ConvTranspose2d, nn.Sigmoid]
    assert default.model.optimizer.lr == 0.01


def test_experiment_can_extend_another(make_cfg):
    cfg = make_cfg("experiment=mnist_vae_2d")
    assert cfg.model.net.latent_dim == 2 and cfg.data._target_.endswith("MNISTDataModule")


def test_configs_ship_inside_the_package():
    import importlib.resources

    shipped = importlib.resources.files("apa_lightning.conf")
    assert shipped.joinpath("train.yaml").is_file()
    assert OmegaConf.create(shipped.joinpath("model", "ae.yaml").read_text())["_target_"].endswith("AutoencoderModule")


def test_a_built_wheel_ships_every_config_and_module(tmp_path):
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(CONF.parent),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("apa_lightning/conf/") for n in names if n.endswith(".yaml")}
    assert shipped == {str(p.relative_to(CONF)) for p in CONF.rglob("*.yaml")}
    package = CONF.parent / "apa_lightning"
    assert {n for n in names if n.endswith(".py") and not n.startswith("apa_lightning/conf/")} == {
        f"apa_lightning/{p.relative_to(package)}" for p in package.rglob("*.py")
    }


@pytest.mark.parametrize("precision", ["32-true", "16-mixed", "bf16-mixed", "mixed", "16", "64", "null"])
def test_every_precision_lightning_takes_passes_the_config_check(make_cfg, precision):
    from apa_lightning.cli.config_checks import check_config

    check_config(make_cfg(f"trainer.precision={precision}"))  # null: Lightning's 32-true


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml")))
def test_the_model_a_preset_names_as_its_example_has_every_key_it_sweeps(preset):
    from hydra import compose, initialize_config_module

    from apa_lightning.cli.overrides import _missing_swept_keys, _preset_example

    example = _preset_example(preset)  # offered by the error for a model that lacks the keys
    assert example is not None and example.startswith(("experiment=", "model="))
    with initialize_config_module("apa_lightning.conf", version_base="1.3"):
        config = compose("train", overrides=[f"hparams_search={preset}", example], return_hydra_config=True)
        assert config.hydra.sweeper.params
        assert _missing_swept_keys(config) is None


@pytest.mark.parametrize(
    "override", ["data.batch_size=true", "seed=false", "model.optimizer.lr=true", "data.channels=true"]
)
def test_true_and_false_are_not_taken_for_numbers(make_cfg, override):
    # Python's bool is an int (True == 1): a check of integers, numbers or a choice of numbers must exclude it
    from apa_lightning.cli.config_checks import check_config
    from apa_lightning.errors import ApaError

    key = override.partition("=")[0]
    with pytest.raises(ApaError, match=f"^{key}=(True|False) is not allowed: {key} must be "):
        check_config(make_cfg(override))


@pytest.mark.parametrize(
    "name, allowed", [("2024", True), ("run.v2", True), ("a/b", False), ("..", False), ("x" * 300, False)]
)
def test_task_name_is_any_folder_name_the_run_directory_can_take(make_cfg, name, allowed):
    # a number is a folder name too (Hydra reads task_name=2024 as an int); a / or .. would leave outputs/runs/
    from apa_lightning.cli.config_checks import check_config
    from apa_lightning.errors import ApaError

    if allowed:
        check_config(make_cfg(f"task_name={name}"))
    else:
        with pytest.raises(ApaError, match="task_name must be a folder name"):
            check_config(make_cfg(f"task_name={name}"))
