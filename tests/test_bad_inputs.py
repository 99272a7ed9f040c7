"""The catalogue of bad inputs: each case runs the real entry point in-process and must end with a non-zero exit,
one ``error:`` paragraph naming the key or file, no traceback, and nothing half-written on disk.

Add a case for every bad input the product learns to refuse: ``Case(id, overrides, expected message parts)``,
with an optional ``prepare(tmp_path) -> list[str]`` that writes the bad files and returns extra overrides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from apa_lightning.cli.main import main
from apa_lightning.cli.overrides import check_overrides
from apa_lightning.errors import ApaError, user_error

FAST = ["trainer=debug", "logger=csv"]
# Names a crash may leave behind that must never stay on disk.
HALF_WRITTEN = ("*.partial", "*.tmp", "*.part", ".tmp*")

FUSED = ("alexnet", "mobilenet")  # the fusion network's two backbones


@dataclass
class Case:
    id: str
    overrides: list[str]
    expected: list[str]  # parts of the one error paragraph
    prepare: Callable[[Path], list[str]] | None = None
    exit_code: int = 1
    marks: list = field(default_factory=list)
    before_run_dir: bool = False  # refused before Hydra makes the run directory: none may be left


def run_entry(monkeypatch, capsys, tmp_path: Path, overrides: list[str]) -> tuple[int, str]:
    """Run ``python -m apa_lightning <overrides>`` in this process; its exit status and stderr."""
    monkeypatch.setattr(sys, "argv", ["apa_lightning", f"paths.root_dir={tmp_path}", *overrides])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def assert_one_clear_error(code: int, stderr: str, expected: list[str], exit_code: int = 1) -> str:
    """The run failed with ``exit_code`` and printed exactly one ``error:`` paragraph holding ``expected``."""
    assert code == exit_code, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.count("error: ") == 1, stderr
    paragraph = stderr.split("error: ", 1)[1].strip()
    assert "\n\n" not in paragraph, paragraph
    for part in expected:
        assert part in paragraph, paragraph
    return paragraph


def assert_nothing_half_written(root: Path) -> None:
    leftovers = [p for pattern in HALF_WRITTEN for p in root.rglob(pattern)]
    assert not leftovers, leftovers


def a_file(tmp_path: Path) -> list[str]:
    (tmp_path / "a_file").write_text("not a folder")
    return []


def garbage_checkpoint(tmp_path: Path) -> list[str]:
    (tmp_path / "garbage.ckpt").write_bytes(b"\x80\x04 this is not a checkpoint" * 10)
    return [f"ckpt_path={tmp_path / 'garbage.ckpt'}"]


def autoencoder_checkpoint(tmp_path: Path) -> list[str]:
    import torch

    hparams = {"net": {"_target_": "apa_lightning.nets.conv_ae.ConvAutoencoder", "in_channels": 1}}
    torch.save({"state_dict": {}, "hyper_parameters": hparams, "epoch": 0}, tmp_path / "ae.ckpt")
    return [f"ckpt_path={tmp_path / 'ae.ckpt'}"]


def autoencoder_checkpoint_at_lr_0_001(tmp_path: Path) -> list[str]:
    import torch

    hparams = {
        "net": {"_target_": "apa_lightning.nets.conv_ae.ConvAutoencoder", "in_channels": 1, "output_batchnorm": False},
        "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.001},
    }
    torch.save({"state_dict": {}, "hyper_parameters": hparams, "epoch": 0}, tmp_path / "ae.ckpt")
    return [f"ckpt_path={tmp_path / 'ae.ckpt'}"]


def resume_without_checkpoint(tmp_path: Path) -> list[str]:
    (tmp_path / "some_dir").mkdir()
    return [f"resume={tmp_path / 'some_dir'}"]


def idx_source(tmp_path: Path, damage: str) -> list[str]:
    """MNIST's four IDX .gz files in a source_dir, one of them damaged: ``truncated`` or ``wrong magic``."""
    import gzip

    import numpy as np

    from .conftest import write_idx

    source = tmp_path / "idx_source"
    source.mkdir()
    for split, n in (("train", 40), ("t10k", 20)):
        write_idx(source / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28)), compress=True)
        write_idx(source / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, compress=True)
    bad = source / ("train-images-idx3-ubyte.gz" if damage == "truncated" else "t10k-labels-idx1-ubyte.gz")
    data = bad.read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(gzip.compress(b"\x08\x01\x00\x00" + gzip.decompress(data)[4:]))
    return ["data=mnist", f"data.source_dir={source}", "data.download=false"]


def eurosat_folder(tmp_path: Path, corrupt: bool) -> list[str]:
    """A tiny EuroSAT (ten 64x64 JPEGs per class); with ``corrupt`` one of them is cut in half."""
    import numpy as np
    from PIL import Image

    from .conftest import EUROSAT_CLASSES

    for c, name in enumerate(EUROSAT_CLASSES):
        folder = tmp_path / "eurosat_data" / "eurosat" / "2750" / name
        folder.mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((64, 64, 3), c * 25, dtype=np.uint8)).save(folder / f"{name}_{i + 1}.jpg")
    if corrupt:
        bad = tmp_path / "eurosat_data" / "eurosat" / "2750" / "River" / "River_4.jpg"
        bad.write_bytes(bad.read_bytes()[:300])
    return ["data=eurosat", f"data.data_dir={tmp_path / 'eurosat_data'}", "data.download=false"]


def weights_file(tmp_path: Path, content: str) -> list[str]:
    """A ``weights_path`` that is ``garbage`` or the state dict of another network (a linear layer)."""
    import torch

    path = tmp_path / "weights.pth"
    if content == "garbage":
        path.write_bytes(b"<html>503 Service Unavailable</html>")
    else:
        torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    return ["model.net.pretrained=true", f"model.net.weights_path={path}"]


def trained_checkpoint_and_images(tmp_path: Path, damage: bool = False) -> list[str]:
    """A checkpoint of an untrained conv autoencoder on 28x28 grey images and a folder of two PNGs, the second
    cut short with ``damage``."""
    import numpy as np
    import torch
    from PIL import Image

    from apa_lightning.models.autoencoder import AutoencoderModule

    model = AutoencoderModule(
        net={"_target_": "apa_lightning.nets.conv_ae.ConvAutoencoder", "in_channels": 1},
        optimizer={"_target_": "torch.optim.Adam", "lr": 0.001},
    )
    data = {"image_size": 28, "channels": 1, "normalize": "none"}
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    torch.save({**checkpoint, "datamodule_hyper_parameters": data}, tmp_path / "ae.ckpt")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((40, 40), 128, np.uint8)).save(folder / name)
    if damage:
        (folder / "b.png").write_bytes((folder / "b.png").read_bytes()[:60])
    return [f"ckpt_path={tmp_path / 'ae.ckpt'}", f"input={folder}"]


def yolo_weights(tmp_path: Path) -> list[str]:
    (tmp_path / "best.pt").write_bytes(b"not read")
    return [f"ckpt_path={tmp_path / 'best.pt'}"]


def empty_folder(tmp_path: Path) -> list[str]:
    (tmp_path / "empty").mkdir()
    return [f"input={tmp_path / 'empty'}", *garbage_checkpoint(tmp_path)]


CASES: list[Case] = [
    # checked before the run directory is made (no directory is left behind)
    Case(
        "task_name a path", ["task_name=../elsewhere"], ["task_name=../elsewhere", "a folder name"], before_run_dir=True
    ),
    Case("task_name ..", ["task_name=.."], ["task_name=.. is not allowed", "a folder name"], before_run_dir=True),
    Case("unknown task", ["task=nonsense"], ["task=nonsense is not a task", "train"], before_run_dir=True),
    Case("misspelt task", ["task=evl"], ["task=evl is not a task. Did you mean task=eval?"], before_run_dir=True),
    Case(
        "max_epochs not a number",
        ["trainer.max_epochs=abc"],
        ["trainer.max_epochs=abc", "integer >= 1"],
        before_run_dir=True,
    ),
    Case("seed not a number", ["seed=abc"], ["seed=abc", "an integer, or null"], before_run_dir=True),
    Case(
        "precision Lightning does not know",
        ["trainer.precision=abc"],
        ["trainer.precision=abc is not allowed", "32-true, 16-mixed, bf16-mixed, mixed"],
        before_run_dir=True,
    ),
    Case("negative num_workers", ["data.num_workers=-1"], ["data.num_workers=-1", "integer >= 0"], before_run_dir=True),
    Case("bad augment_on", ["data.augment_on=gpu"], ["data.augment_on=gpu", "device or workers"], before_run_dir=True),
    Case(
        "on_device with loader workers",
        ["data.on_device=true", "data.num_workers=2"],
        ["data.on_device=true", "set data.num_workers=0 (got 2)"],
        before_run_dir=True,
    ),
    Case("lr null", ["model.optimizer.lr=null"], ["model.optimizer.lr=null", "a number > 0"], before_run_dir=True),
    Case(
        "dropout above 1",
        ["model=cnn_base", "model.net.dropout=1.5"],
        ["model.net.dropout=1.5", "[0, 1)"],
        before_run_dir=True,
    ),
    Case(
        "latent_dim 0",
        ["model=vae", "model.net.latent_dim=0"],
        ["model.net.latent_dim=0", "integer >= 1"],
        before_run_dir=True,
    ),
    Case("batch_size 0", ["data.batch_size=0"], ["data.batch_size=0", "integer >= 1"], before_run_dir=True),
    Case("compile maybe", ["model.compile=maybe"], ["model.compile=maybe", "true or false"], before_run_dir=True),
    Case("test maybe", ["test=maybe"], ["test=maybe", "true or false"], before_run_dir=True),
    Case("channels 2", ["data.channels=2"], ["data.channels=2", "1 or 3"], before_run_dir=True),
    Case(
        "log_dir is a file",
        ["paths.log_dir=${paths.root_dir}/a_file"],
        ["paths.log_dir=", "a file"],
        a_file,
        before_run_dir=True,
    ),
    Case(
        "log_dir under /proc",
        ["paths.log_dir=/proc/apa"],
        ["paths.log_dir=/proc/apa", "cannot be written"],
        before_run_dir=True,
    ),
    Case(
        "data_dir in a file",
        ["paths.data_dir=${paths.root_dir}/a_file/data"],
        ["paths.data_dir=", "a file"],
        a_file,
        before_run_dir=True,
    ),
    # checked when the run starts
    Case("garbage ckpt_path", FAST, ["garbage.ckpt is not a checkpoint of this tool"], garbage_checkpoint),
    Case(
        "checkpoint of another model",
        ["model=vae", *FAST],
        ["was made with the network apa_lightning.nets.conv_ae.ConvAutoencoder", "model.net is"],
        autoencoder_checkpoint,
    ),
    Case("resume a folder without checkpoints", FAST, ["has no checkpoints/last.ckpt"], resume_without_checkpoint),
    Case("resume a missing folder", ["resume=/nonexistent/run", *FAST], ["resume=/nonexistent/run does not exist"]),
    Case(
        "resume with another optimizer setting",
        ["model.optimizer.lr=0.01", *FAST],
        ["model.optimizer.lr was 0.001, but it is 0.01 now", "drop the override that changed it"],
        autoencoder_checkpoint_at_lr_0_001,
        before_run_dir=True,
    ),
    Case(
        "truncated .gz in source_dir",
        FAST,
        ["idx_source/train-images-idx3-ubyte.gz cannot be read", "truncated or corrupt", "Replace it"],
        lambda tmp_path: idx_source(tmp_path, "truncated"),
    ),
    Case(
        "IDX file with a wrong magic number",
        FAST,
        ["idx_source/t10k-labels-idx1-ubyte.gz is not a valid MNIST IDX file", "magic number is 08010000"],
        lambda tmp_path: idx_source(tmp_path, "wrong magic"),
    ),
    Case(
        "corrupt EuroSAT image",
        ["model=cnn_base", *FAST],
        ["EuroSAT image", "River/River_4.jpg cannot be decoded", "corrupt or truncated"],
        lambda tmp_path: eurosat_folder(tmp_path, corrupt=True),
    ),
    Case(
        "autoencoder on standardised images",
        ["model=ae", *FAST],
        ["AutoencoderModule reconstructs images in [0.0, 1.0]", "data.normalize=dataset", "data.normalize=none"],
        lambda tmp_path: eurosat_folder(tmp_path, corrupt=False),
    ),
    Case(
        "weights_path not a weights file",
        ["model=resnet18", *FAST],
        ["weights.pth cannot be read as PyTorch weights", "expected torchvision's resnet18 ImageNet weights"],
        lambda tmp_path: weights_file(tmp_path, "garbage"),
    ),
    Case(
        "weights_path of another network",
        ["model=alexnet", *FAST],
        ["weights.pth does not hold weights for alexnet", "unexpected: bias, weight", "model.net.weights_path"],
        lambda tmp_path: weights_file(tmp_path, "other network"),
    ),
    Case(
        "fusion freeze outside the vocabulary",
        # weights that cannot load: the freeze check must come first, whatever torchvision's cache holds
        ["model=fusion", "model.net.freeze=true", *FAST, *(f"model.net.{n}_weights_path=/none.pth" for n in FUSED)],
        ["model.net.freeze=True", "none, features"],
    ),
    # task=eval and task=predict: the checkpoint and the images
    Case("eval without ckpt_path", ["task=eval"], ["task=eval needs ckpt_path=", "run directory"], before_run_dir=True),
    Case(
        "eval of a missing checkpoint",
        ["task=eval", "ckpt_path=/nonexistent/model.ckpt"],
        ["ckpt_path=/nonexistent/model.ckpt does not exist", "a .ckpt file or a run directory"],
        before_run_dir=True,
    ),
    Case(
        "eval of a folder without checkpoints",
        ["task=eval"],
        ["some_dir holds no checkpoint", "no checkpoints/last.ckpt"],
        lambda tmp_path: [f"ckpt_path={resume_without_checkpoint(tmp_path)[0].split('=', 1)[1]}"],
        before_run_dir=True,
    ),
    Case(
        "eval of a file that is no checkpoint",
        ["task=eval"],
        ["garbage.ckpt is not a checkpoint of this tool"],
        garbage_checkpoint,
        before_run_dir=True,
    ),
    Case(
        "eval of YOLO weights",
        ["task=eval"],
        ["task=eval takes the .ckpt of a training run", "best.pt is a YOLO detector's weights"],
        yolo_weights,
        before_run_dir=True,
    ),
    Case(
        "eval on images of another size",
        ["task=eval", "data.image_size=32"],
        ["ae.ckpt was trained on data.image_size=28, but data.image_size=32", "set data.image_size=28"],
        trained_checkpoint_and_images,
        before_run_dir=True,
    ),
    Case(  # the model would come from the checkpoint all the same, under the name of the other one
        "eval with another model config",
        ["task=eval", "model=vae"],
        ["ae.ckpt was made with the network apa_lightning.nets.conv_ae.ConvAutoencoder", "drop the model="],
        trained_checkpoint_and_images,
        before_run_dir=True,
    ),
    Case(
        "predict without input",
        ["task=predict"],
        ["task=predict needs input="],
        garbage_checkpoint,
        before_run_dir=True,
    ),
    Case(
        "predict on a folder without images",
        ["task=predict"],
        ["empty: the folder holds no images", ".png"],
        empty_folder,
        before_run_dir=True,
    ),
    Case(
        "predict on an unreadable image",
        ["task=predict", *FAST],
        ["photos/b.png cannot be read as an image", "move it out of the input folder"],
        lambda tmp_path: trained_checkpoint_and_images(tmp_path, damage=True),
    ),
    # a key added with + that the _target_ class does not take: refused when the Trainer is built
    Case(
        "+key the Trainer does not take",
        ["+trainer.max_epoch=1", *FAST],
        ["trainer.max_epoch is not a parameter of lightning.pytorch.trainer.trainer.Trainer", "trainer.max_epochs?"],
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_clear_error(case: Case, monkeypatch, capsys, tmp_path):
    extra = case.prepare(tmp_path) if case.prepare else []
    code, stderr = run_entry(monkeypatch, capsys, tmp_path, [*case.overrides, *extra])
    paragraph = assert_one_clear_error(code, stderr, case.expected, case.exit_code)
    print(f"{case.id}: {paragraph}")  # the catalogue of messages, with pytest -s
    assert_nothing_half_written(tmp_path)
    assert (
        not list((tmp_path / "outputs").glob("runs/*/*/.hydra")) or case.overrides == FAST or FAST[0] in case.overrides
    )
    if case.before_run_dir:  # not even an empty outputs/
        assert not (tmp_path / "outputs").exists(), list((tmp_path / "outputs").rglob("*"))


def test_a_full_disk_keeps_finished_work_and_names_the_file(monkeypatch, capsys, tmp_path):
    import builtins
    import errno

    class FullDisk:
        """A checkpoint file on a disk that fills up: half of the bytes reach it, then ENOSPC."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def open_on_a_full_disk(path, *args, **kwargs):
        f = builtins.open(path, *args, **kwargs)
        return FullDisk(f) if ".ckpt." in str(path) else f  # metrics.json still fits

    monkeypatch.setattr("apa_lightning.runs.files.open", open_on_a_full_disk, raising=False)
    code, stderr = run_entry(
        monkeypatch,
        capsys,
        tmp_path,
        ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "logger=csv"],
    )
    paragraph = assert_one_clear_error(code, stderr, ["the disk is full", "epoch001.ckpt", "paths.log_dir"])
    assert_nothing_half_written(tmp_path)
    (run_dir,) = (tmp_path / "outputs" / "runs").glob("*/*")
    assert list((run_dir / "checkpoints").iterdir()) == []  # no truncated checkpoint under a real name
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"] == paragraph
    assert record["best_checkpoint"] is None  # Lightning had named the file it could not write
    assert "the disk is full" in (run_dir / "run.log").read_text()


# Overrides the config cannot be composed with: refused by the CLI before Hydra runs (``check_overrides``).
@pytest.mark.parametrize(
    "argv, expected",
    [
        (["data=mnsit"], ["data=mnsit: there is no data config named mnsit", "Did you mean mnist?", "cifar10, digits"]),
        (["-m", "model=ae,vea"], ["model=vea: there is no model config named vea", "Did you mean vae?"]),
        (["hydra/launcher=jobib"], ["no hydra/launcher config named jobib", "Did you mean joblib?"]),
        (["model.lr=0.1"], ["model.lr is not a setting", "Did you mean model.optimizer.lr?", "+model.lr=0.1."]),
        (["-m", "lr=0.1,0.01"], ["lr is not a setting", "model.optimizer.lr?", "+lr=0.1,0.01."]),
        (["trainr.max_epochs=1"], ["trainr.max_epochs is not a setting", "Did you mean trainer.max_epochs?"]),
        (["model=vae", "model.net.latnt_dim=2"], ["Did you mean model.net.latent_dim?", "keys of model.net:"]),
        (["seed.x=1"], ["seed.x is not a setting", "seed holds a single value"]),
        (
            ["model.optimizer.lr=0.1,0.01"],
            ["model.optimizer.lr=0.1,0.01 is a sweep", "add -m to run one job for each."],
        ),
        (["task_name=mine,yours"], ["task_name=mine,yours is a sweep", "add -m", "task_name='mine,yours'"]),
        (["-m", "model=ae,vae", "model.net.latent_dim=2"], ["model.net.latent_dim is not", "checked with model=ae"]),
        (["model.optimizer.lr=["], ["model.optimizer.lr=[ cannot be read as an override", "in quotes"]),
        (["-m", "--cfg", "job", "lr=1,2"], ["-m and --cfg cannot be given together", "drop -m"]),  # Hydra: traceback
        (["logger=null"], ['logger=null: a config group cannot be null; to leave logger out, write "~logger".']),
        (["-m", "hydra.launcher.n_jobs=2", "seed=1,2"], ["a launcher this command does", "local_parallel"]),
        # every job's value is checked before the first job starts, not when its own job does
        (["-m", "model.optimizer.lr=0.1,abc"], ["model.optimizer.lr=abc is not allowed", "a number > 0"]),
        (["-m", "trainer.max_epochs=range(0,3)"], ["trainer.max_epochs=0 is not allowed"]),
        (["-m", "hydra.job.chdir=true,abc"], ["hydra.job.chdir=abc is not allowed", "not a valid bool"]),  # typed key
        # sweeps Hydra cannot list (its ValueError is a traceback; an empty glob runs no job without a word)
        (["-m", "trainer.max_epochs=range(1,3,0)"], ["trainer.max_epochs=range(1,3,0) cannot be swept", "zero"]),
        (["-m", "experiment=glob(cifar100*)"], ["glob(cifar100*) cannot be swept: it gives no value", "cifar10_cnn"]),
        # found by a new user: each was a traceback or a failed run directory
        (["=5"], ["=5 has no key"]),
        (["~model"], ["~model: a run needs a model config", "model=<name>"]),
        (["trainer=null"], ["trainer=null: a run needs a trainer config", "trainer=<name>", "debug"]),
        (["model=null"], ["model=null: a run needs a model config", "model=<name>"]),  # ~model too, for training
        (["task=eval", "model=null"], ["model=null: a config group cannot be null", "write ~model"]),
        (["~paths"], ["~paths: a run needs a paths config", "paths=<name>"]),  # beside paths.root_dir=...
        # Hydra's basic sweeper: a traceback after making the sweep directory
        (["-m", "model.optimizer.lr=interval(0.1,0.2)"], ["interval(0.1,0.2): Hydra's basic sweeper", "optuna"]),
        (["~seed"], ["callbacks.epoch_seed.seed=${seed} cannot be resolved", "'seed' not found"]),
        (["data.batch_size=${trainer.max_epoch}"], ["data.batch_size=${trainer.max_epoch} cannot be resolved"]),
        (["model.optimizer=sgd"], ["sets model.optimizer to the text sgd", "write model/optimizer=sgd"]),
        # a misspelt name without its parents
        (["weight_decy=0.1"], ["Did you mean model.optimizer.weight_decay?"]),
        (["experiment=cifar10_cnn_v3", "dropuot=0.1"], ["Did you mean model.net.dropout?"]),
        # the model config adds its family's callbacks: the group cannot go (Hydra: "Could not override ...")
        (["~callbacks"], ["~callbacks: the callbacks cannot be removed as a group", "callbacks.<name>=null"]),
        (["callbacks=none"], ["callbacks=none: the callbacks cannot be removed", "model=yolo's"]),
        (["callbacks=[]"], ["callbacks=[]: the callbacks cannot be removed as a group"]),
        # a typo outside the swept group: no advice to sweep its configs apart
        (["-m", "model=ae,vae", "trainer.max_epoch=3"], ["trainer.max_epochs?", "checked with model=ae.)"]),
        # model=yolo's own callbacks=none is fine: the typo beside it is the error
        (["model=yolo", "data=kitti", "callbacks=none", "trainer.max_epoch=3"], ["Did you mean trainer.max_epochs?"]),
    ],
)
def test_a_bad_override_names_the_key_and_the_closest_names(argv, expected, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # which leaves the report to Hydra
    with pytest.raises(ApaError) as refused:
        check_overrides([*argv, "paths.root_dir=/nonexistent"])  # after -m: argparse wants one run of overrides
    message = str(refused.value)
    assert "\n" not in message and "search path" not in message, message
    for part in expected:
        assert part in message, message


@pytest.mark.parametrize(
    "argv",
    [
        [
            "-m",
            "model=cnn_v3",
            "model.optimizer.lr=0.1,0.01",
            "model.net.dropout=range(0.1,0.3,0.1)",
            "hydra/launcher=joblib",
        ],
        ["-m", "model=ae,vae", "data=glob(*mnist)"],
        ["-m", "seed=${hydra:job.num}", "model.optimizer.lr=0.1,0.01"],  # resolved only in the job: not checked
        ["-m", "hydra/sweeper=optuna", "model.optimizer.lr=tag(log, interval(0.0001, 0.1))"],
        ["-m", "model=cnn_v3", "hparams_search=optuna"],
        ["hparams_search=resnet18_grid", "model.optimizer.lr=0.1,0.01"],  # the preset sets hydra.mode=MULTIRUN
        ["-m", "logger=csv,tensorboard", "model=ae,dae", "model.net.output_batchnorm=true,false"],  # vae: no such key
        ["experiment=mnist_vae", "+callbacks.extra._target_=x.Y", "~logger"],
        ["task=eval", "ckpt_path='/a folder/with spaces/last.ckpt'", "hydra.run.dir='/a b/c=1,d'", "hydra.mode=RUN"],
        ["--cfg", "job", "model=vae"],
        ["task=eval", "ckpt_path=/elsewhere/model.ckpt", "~model"],  # a bare checkpoint's model is its own
        ["task=eda", "~model", "~trainer"],  # eda reads the data only
        ["--help"],
        ["--config-dir", "/nonexistent", "trainer.max_epoch=1"],  # another config: Hydra reports
    ],
)
def test_valid_overrides_and_sweeps_pass_the_override_check(argv):
    check_overrides(argv)  # raises ApaError for a refused command line


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["trainer.max_epoch=1"],
            ["trainer.max_epoch is not a setting", "Did you mean trainer.max_epochs?", "+trainer"],
        ),
        (["data=mnsit"], ["data=mnsit: there is no data config named mnsit", "Did you mean mnist?"]),
    ],
)
def test_cli_refuses_a_bad_override_before_making_a_directory(argv, expected, tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": ""}
    done = subprocess.run(
        [sys.executable, "-m", "apa_lightning", f"paths.root_dir={tmp_path}", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_clear_error(done.returncode, done.stderr, expected)
    assert "Config search path" not in done.stderr and "HYDRA_FULL_ERROR" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/, no run directory


def test_a_key_a_nested_target_does_not_take_is_named_with_its_parameters():
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    net = {"_target_": "apa_lightning.nets.conv_ae.ConvAutoencoder", "in_channels": 1, "output_batchnrm": True}
    model = OmegaConf.create(
        {"model": {"_target_": "apa_lightning.models.autoencoder.AutoencoderModule", "net": net, "optimizer": {}}}
    ).model
    with pytest.raises(InstantiationException) as failed:
        instantiate(model, _recursive_=False, _convert_="all")
    message = user_error(failed.value)
    assert message is not None and message.startswith("output_batchnrm is not a parameter of"), message
    assert "ConvAutoencoder (a _target_ inside model)" in message and "Did you mean output_batchnorm?" in message


class CallsJsonWrongly:
    """A _target_ whose own code passes a bad keyword to another function."""

    def __init__(self, path: str = "x") -> None:
        import json

        json.dumps({}, indnt=2)


def instantiation_error(config: dict) -> str | None:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    with pytest.raises(InstantiationException) as failed:
        instantiate(OmegaConf.create({"node": config}).node)
    return user_error(failed.value)


def test_a_type_error_inside_the_target_is_not_blamed_on_a_config_key():
    message = instantiation_error({"_target_": f"{__name__}.CallsJsonWrongly", "path": "y"})
    assert message is not None and "indnt is not a parameter" not in message
    assert "JSONEncoder.__init__() got an unexpected keyword argument 'indnt'" in message  # the real error


def test_a_key_a_subclass_passes_on_to_its_base_is_matched_against_both_classes_parameters():
    # EuroSATDataModule(**kwargs) hands the misspelt key to InMemoryImageDataModule, which refuses it
    message = instantiation_error({"_target_": "apa_lightning.data.eurosat.EuroSATDataModule", "data_dirr": "/x"})
    assert message.startswith("node.data_dirr is not a parameter of apa_lightning.data.eurosat.EuroSATDataModule")
    assert "Did you mean node.data_dir?" in message


def test_override_messages_for_a_missing_plugin_and_without_the_key_itself_as_suggestion():
    from apa_lightning.cli.overrides import missing_config_message, unknown_key_message

    message = missing_config_message("hydra/launcher", "joblib", [], asked_by="hydra/launcher/local_parallel")
    assert message == (
        "hydra/launcher/local_parallel asks for hydra/launcher=joblib: that config comes with the Hydra plugin "
        "hydra-joblib-launcher, which is not installed: pip install -e .[sweeps]"
    )
    key = "hydra.sweeper.params.model.net.dropout"
    config = {"hydra": {"sweeper": {"params": {"model.net.dropout": "interval(0.1, 0.5)", "model.optimizer.lr": 1}}}}
    assert "Did you mean" not in unknown_key_message(key, f"{key}=0.1", config)
    # keys below an existing parent are compared without it: its prefix makes any key look close
    config = {"model": {"optimizer": {"lr": 0.1, "weight_decay": 0.0}}}
    assert "Did you mean" not in unknown_key_message("model.optimizer.foo", "model.optimizer.foo=1", config)


def test_a_swept_group_without_m_is_not_advised_to_quote_its_configs_as_a_text(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(ApaError) as refused:
        check_overrides(["model=ae,vae"])
    assert str(refused.value) == "model=ae,vae is a sweep over several values: add -m to run one job for each."


# Sweeps whose trials would fail: a preset's keys the model lacks, a setting its interpolations lack, a later value
# of a swept config group; and advice that survives being pasted into a shell.
@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2"],
            "hparams_search=optuna sweeps model.net.dropout, which this config does not have (model=ae, data=digits): "
            "use a model that has it, e.g. experiment=cifar10_cnn_v3, or drop the preset.",
        ),
        (
            ["-m", "hparams_search=cnn_v3_report", "setting=row5", "data=digits", "trainer.max_epochs=1"],
            "setting=row5 is not one of the settings of hparams_search=cnn_v3_report: row1, row2, row3, row4",
        ),
        (
            ["-m", "hparams_search=cnn_v3_report", "setting=row1,row5"],
            "setting=row5 is not one of the settings of hparams_search=cnn_v3_report: row1, row2, row3, row4",
        ),
        (  # a value that is no text: OmegaConf's error is another than for a missing key
            ["-m", "hparams_search=cnn_v3_report", "setting=1"],
            "setting=1 is not one of the settings of hparams_search=cnn_v3_report: row1, row2, row3, row4",
        ),
        (  # the table of each swept preset, not only the first one's
            ["-m", "hparams_search=resnet18_report,cnn_v3_report", "setting=row5"],
            "setting=row5 is not one of the settings of hparams_search=cnn_v3_report: row1, row2, row3, row4",
        ),
    ],
)
def test_a_sweep_over_keys_or_settings_the_config_lacks_is_refused_with_the_names_it_has(argv, expected, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(ApaError) as refused:
        check_overrides(argv)
    assert str(refused.value) == expected


def test_a_missing_config_of_a_group_that_does_not_exist_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "nested.yaml").write_text("# @package _global_\ndefaults:\n  - /data/clases: car\n")
    with pytest.raises(ApaError) as refused:
        check_overrides([f"hydra.searchpath=[file://{tmp_path}]", "experiment=nested"])
    assert str(refused.value) == (
        "experiment/nested asks for data/clases=car: there is no data/clases config named car. "
        "There is no config group data/clases."
    )


def test_sweep_params_not_from_a_preset_are_named_as_such(tmp_path, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    (tmp_path / "experiment").mkdir()
    params = "      model.net.dropout: 0.1,0.2\n      model.x: 1,2\n"
    (tmp_path / "experiment" / "own.yaml").write_text(f"# @package _global_\nhydra:\n  sweeper:\n    params:\n{params}")
    with pytest.raises(ApaError) as refused:
        check_overrides(["-m", f"hydra.searchpath=[file://{tmp_path}]", "experiment=own"])
    assert str(refused.value) == (
        "hydra.sweeper.params sweeps model.net.dropout and model.x, which this config does not have (experiment=own, "
        "model=ae, data=digits): use a model that has them or drop them from hydra.sweeper.params."
    )


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["-m", "model=cnn_base,ae", "model.net.dropout=0.3"],
            [
                "model.net.dropout is not a setting",
                "+model.net.dropout=0.3.",
                "(The sweep was checked with model=ae; sweep the configs that have the key in",
            ],
        ),
        (
            ["-m", "hparams_search=optuna", "model=cnn_v3,ae"],
            ["hparams_search=optuna sweeps model.net.dropout", "(model=ae, data=digits)"],
        ),
        (  # the preset sweeps model/optimizer: sgd,asgd, and ASGD has no momentum
            ["-m", "hparams_search=resnet18_grid", "model.optimizer.momentum=0.9"],
            [
                "model.optimizer.momentum is not a setting",
                "(The sweep was checked with model/optimizer=asgd; sweep the configs that",
            ],
        ),
    ],
)
def test_each_config_of_a_swept_group_is_composed(argv, expected, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(ApaError) as refused:
        check_overrides(argv)
    for part in expected:
        assert part in str(refused.value), str(refused.value)


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "hparams_search=optuna", "experiment=cifar10_cnn_v3", "hydra.sweeper.n_trials=30"],
        ["-m", "hparams_search=optuna", "model=cnn_v3,cnn_v2"],
        ["-m", "hparams_search=cnn_v3_report"],
        ["hparams_search=cnn_v3_report", "setting=row2"],
        ["-m", "hparams_search=cnn_v3_report", "setting=row1,row4", "data=digits"],
        ["-m", "hparams_search=resnet18_grid"],
        ["-m", "hparams_search=notmnist_code_sizes"],
        ["-m", "model=ae,vae,dae"],
    ],
)
def test_each_preset_sweep_passes_the_override_check_with_the_models_it_is_for(argv, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    check_overrides(argv)  # raises ApaError for a refused command line


def test_a_config_name_in_a_list_gets_the_groups_configs_as_suggestions(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(ApaError) as refused:
        check_overrides(["logger=[tensorbord]"])
    assert str(refused.value) == (
        "logger=tensorbord: there is no logger config named tensorbord. Did you mean tensorboard? "
        "Choose one of: csv, tensorboard."
    )


@pytest.mark.parametrize(
    "argv, advice",
    [
        (["task_name=mine,yours"], ["\"task_name='mine,yours'\""]),
        (["model.optimizer.lr=["], ["\"key='a value'\""]),
        (
            ["-m", "model.optimzer.lr=tag(log, interval(0.001, 0.1))"],
            ['"+model.optimzer.lr=tag(log, interval(0.001, 0.1))"'],
        ),
    ],
)
def test_quoting_advice_survives_the_shell(argv, advice, monkeypatch):
    import shlex

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(ApaError) as refused:
        check_overrides(argv)
    message = str(refused.value)
    for part in advice:
        assert part in message, message
        (word,) = shlex.split(part)  # what bash hands Python: the single quotes of the value survive
        assert word == part[1:-1]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["-m", "model=ae,vae", "trainer.max_epochs=0"], "trainer.max_epochs=0 is not allowed"),  # set, not swept
        (["hparams_search=resnet18_grid", "data.num_workers=-1"], "data.num_workers=-1 is not allowed"),  # no -m
    ],
)
def test_a_sweep_with_a_value_every_job_would_refuse_stops_before_the_first_job(argv, expected, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(ApaError, match=expected):
        check_overrides(argv)
