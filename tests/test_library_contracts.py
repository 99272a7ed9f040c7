"""Contracts with library internals: every private symbol of Lightning, ultralytics, Hydra ... the package still
relies on, because no public API does the same (each hook says why, in a comment where it is used).

A test here fails with the library's name, its installed version and the symbol (``broken``), so that an upgrade
that moves or changes one is caught by name instead of changing a run's behaviour quietly. One section per library;
add a hook's test to its library's section.
"""

from __future__ import annotations

import inspect
import platform
import re
from importlib.metadata import version
from pathlib import Path

import pytest

from apa_lightning.cli.console import DROPPED_LINES, IGNORED_WARNINGS

from .conftest import bare_trainer


def broken(library: str, symbol: str, used_by: str) -> str:
    """The failure message of a contract test: ``<library> <installed version> no longer has <symbol>: <used_by>``."""
    return f"{library} {version(library)} no longer has {symbol}: {used_by}"


# ---------------------------------------------------------------------------------------------------- lightning


def test_lightning_ddp_launcher_builds_a_hydra_jobs_rank_command_with_the_function_we_replace():
    from apa_lightning.tasks.distributed import LAUNCHER_COMMAND, LAUNCHER_MODULE, launcher_calls_job_command

    assert launcher_calls_job_command(), broken(
        "lightning",
        f"{LAUNCHER_MODULE}.{LAUNCHER_COMMAND} called by its _SubprocessScriptLauncher",
        "tasks/distributed.py starts each DDP rank of a Hydra job through it (else every rank re-runs the sweep)",
    )


def test_lightning_model_checkpoint_state_keeps_the_paths_a_moved_run_directory_rewrites(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    keys = ("dirpath", "best_model_path", "kth_best_model_path", "last_model_path", "best_k_models")
    state = ModelCheckpoint(dirpath=tmp_path).state_dict()
    for key in keys:
        assert key in state, broken(
            "lightning",
            f"ModelCheckpoint.state_dict()[{key!r}]",
            "callbacks/checkpoints.py RunCheckpoint.load_state_dict points it into a copied run directory",
        )


def test_lightning_counts_an_epoch_as_processed_before_its_epoch_end_hooks_and_checkpoints_that_count(tmp_path):
    import lightning as L
    import torch
    from lightning.pytorch.demos.boring_classes import BoringModel

    symbol = "fit_loop.epoch_progress.current.processed (the finished epochs, counted before on_train_epoch_end)"

    class Counts(L.Callback):
        def __init__(self) -> None:
            self.seen: list[tuple[int, int]] = []

        def on_train_epoch_end(self, trainer, pl_module):
            try:
                processed = trainer.fit_loop.epoch_progress.current.processed
            except AttributeError:
                processed = None
            self.seen.append((trainer.current_epoch + 1, processed))
            trainer.save_checkpoint(tmp_path / f"{trainer.current_epoch + 1}.ckpt")

    counts = Counts()
    trainer = bare_trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, callbacks=[counts])
    trainer.fit(BoringModel())
    # data/in_memory.py seeds a loader's epoch order with it (also when a resumed run makes its loader)
    assert counts.seen == [(1, 1), (2, 2)], broken("lightning", f"Trainer.{symbol}", "data/in_memory.py seeds by it")
    # runs/checkpoints.py finished_epochs reads it back from a checkpoint (resume, intact checkpoints, records)
    checkpoint = torch.load(tmp_path / "2.ckpt", weights_only=True)
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    assert progress.get("processed") == 2, broken(
        "lightning", f"checkpoint['loops']['fit_loop']: {symbol}", "runs/checkpoints.py finished_epochs reads it"
    )


# -------------------------------------------------------------------------------------------------- ultralytics


def test_ultralytics_trainer_looks_up_check_amp_in_its_module_when_it_trains():
    import ultralytics.engine.trainer as trainer_module

    symbol = "ultralytics.engine.trainer.check_amp, called by BaseTrainer._setup_train"
    setup = getattr(trainer_module.BaseTrainer, "_setup_train", None)
    called = "check_amp" in getattr(getattr(setup, "__code__", None), "co_names", ())
    assert callable(getattr(trainer_module, "check_amp", None)) and called, broken(
        "ultralytics", symbol, "detection/train.py replaces it so that an AMP run downloads no yolo26n.pt"
    )


def test_ultralytics_takes_its_fonts_from_its_config_folder_without_asking_the_network(tmp_path, monkeypatch):
    import requests

    from apa_lightning.detection.yolo import setup_ultralytics

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "config"))
    config_dir = setup_ultralytics(tmp_path)

    def no_network(*args, **kwargs):
        raise AssertionError("ultralytics asked the network for its font")

    monkeypatch.setattr(requests, "head", no_network)
    monkeypatch.setattr(requests, "get", no_network)
    from ultralytics.utils.checks import check_font

    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        assert str(check_font(name)) == str(config_dir / name), broken(
            "ultralytics",
            f"ultralytics.utils.checks.check_font({name!r}) -> USER_CONFIG_DIR/{name}",
            "detection/yolo.py puts a font there so that ultralytics stays offline",
        )


def test_ultralytics_training_checkpoints_hold_the_keys_a_resume_check_reads():
    from ultralytics.engine.trainer import BaseTrainer

    # detection/train.py read_ultralytics_checkpoint unpickles last.pt without ultralytics (its objects become
    # placeholders, since ultralytics must not start before it is set up in the run directory) and reads these values
    save_model = getattr(BaseTrainer, "save_model", None)
    written = set(getattr(getattr(save_model, "__code__", None), "co_consts", ()))
    for key in ("epoch", "optimizer", "train_args"):
        assert key in written, broken(
            "ultralytics",
            f"BaseTrainer.save_model writing checkpoint[{key!r}]",
            "detection/train.py resumable_checkpoint checks a resume with it",
        )


# -------------------------------------------------------------------------------------------------- tensorboard


def test_a_closed_summary_writer_reopens_its_event_file_writer(tmp_path):
    from omegaconf import OmegaConf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2
    from torch.utils.tensorboard import SummaryWriter

    from apa_lightning.runs.hparams import write_final

    used_by = "runs/hparams.py (write_final) writes the HParams summaries into the closed writer of a finished run"
    writer = SummaryWriter(str(tmp_path))
    writer.close()  # as Lightning's TensorBoardLogger leaves it after fit and test
    symbol = "torch.utils.tensorboard.SummaryWriter._get_file_writer"
    assert callable(getattr(writer, "_get_file_writer", None)), broken("torch", symbol, used_by)
    cfg = OmegaConf.create({"seed": 1, "trainer": {"max_epochs": 2}, "model": {"lr": 0.1}, "data": {"batch": 4}})
    write_final(writer, cfg, tmp_path / "runs" / "ae" / "1", {}, 3)  # no score: no scalar reopens it first
    writer.close()
    content = EventAccumulator(str(tmp_path)).Reload().PluginTagToContent(metadata.PLUGIN_NAME)
    assert metadata.SESSION_START_INFO_TAG in content, broken(
        "torch", f"{symbol} (reopening the event file: the summaries did not reach the log dir)", used_by
    )
    start = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.SESSION_START_INFO_TAG])
    assert start.session_start_info.group_name == "ae/1"
    assert start.session_start_info.hparams["model/lr"].number_value == 0.1


# ---------------------------------------------------------------------------------------------------------------
# hydra / omegaconf: the override check (cli/overrides.py), the _target_ messages (errors.py) and the lines the
# console drops (cli/console.py)
# ---------------------------------------------------------------------------------------------------------------


TIP, SACCT = DROPPED_LINES["lightning.pytorch.utilities.rank_zero"], DROPPED_LINES["submitit"]
WARNED = [(at, message) for at, (_, message) in enumerate(IGNORED_WARNINGS)]
MODULES = ("torch.utils._pytree", "lightning.pytorch.loops.fit_loop", "lightning.fabric.plugins.environments.slurm")


def _contract(holds: bool, distribution: str, what: str, seen: object) -> None:
    """Fail naming ``distribution`` (as pip knows it, or ``Python``), its installed version, what this package relies
    on, and what the library gives now, unless the contract ``holds``."""
    if not holds:
        installed = platform.python_version() if distribution == "Python" else version(distribution)
        pytest.fail(f"{distribution} {installed} changed: {what}. It now gives: {seen!r}", pytrace=False)


@pytest.fixture
def tiny_configs(tmp_path: Path) -> Path:
    """A config folder: ``main`` picks ``db=real``, and ``db/asks`` names a ``db`` config that does not exist."""
    (tmp_path / "db").mkdir()
    (tmp_path / "main.yaml").write_text("defaults:\n  - db: real\n  - _self_\ntrainer:\n  max_epochs: 1\n")
    (tmp_path / "db" / "real.yaml").write_text("port: 1\n")
    (tmp_path / "db" / "asks.yaml").write_text("defaults:\n  - /db: nope\n")
    return tmp_path


def _composition_error(folder: Path, overrides: list[str]) -> Exception:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(folder), version_base="1.3"), pytest.raises(Exception) as failed:
        compose("main", overrides=overrides)
    return failed.value


def test_hydras_private_argument_parser_reads_the_options_the_override_check_looks_at():
    from apa_lightning.cli.overrides import NOT_CHECKED, OTHER_CONFIG

    try:
        from hydra._internal.utils import get_args_parser
    except ImportError as missing:
        _contract(False, "hydra-core", "hydra._internal.utils.get_args_parser (cli/overrides.py)", missing)
    arguments = get_args_parser().parse_args(["-m", "--cfg", "job", "model=ae", "seed=1"])
    names = ("overrides", "run", "multirun", "cfg", *NOT_CHECKED, *OTHER_CONFIG)
    _contract(
        all(hasattr(arguments, name) for name in names),
        "hydra-core",
        f"get_args_parser() gives the options {', '.join(names)}",
        vars(arguments),
    )
    read = (arguments.multirun, arguments.cfg, arguments.overrides)
    _contract(read == (True, "job", ["model=ae", "seed=1"]), "hydra-core", "-m, --cfg job and the overrides", read)


def test_a_missing_config_names_the_config_that_asked_for_it_only_in_hydras_message(tiny_configs):
    from hydra.errors import MissingConfigException

    from apa_lightning.cli.overrides import ASKED_BY

    error = _composition_error(tiny_configs, ["db=asks"])
    attributes = (type(error), getattr(error, "missing_cfg_file", None), sorted(getattr(error, "options", [])))
    expected = (MissingConfigException, "db/nope", ["asks", "real"])
    _contract(attributes == expected, "hydra-core", "MissingConfigException(missing_cfg_file, options)", attributes)
    # the overrides' messages are Hydra's without the search path it appends (overrides._one_paragraph)
    _contract(
        "Config search path:" in str(error),
        "hydra-core",
        "the search path is appended after 'Config search path:'",
        str(error),
    )
    asked_by = ASKED_BY.match(str(error))
    _contract(
        asked_by is not None and asked_by[1] == "db/asks",
        "hydra-core",
        f"a missing config's message starts with the config asking for it ({ASKED_BY.pattern})",
        str(error),
    )


@pytest.mark.parametrize("override, full_key", [("trainer.max_epoch=1", "trainer.max_epoch"), ("trainr.x=1", "trainr")])
def test_an_unknown_key_is_named_by_omegaconfs_error_behind_hydras(tiny_configs, override, full_key):
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    error = _composition_error(tiny_configs, [override])
    cause = error.__cause__
    seen = (type(error).__name__, type(cause).__name__, getattr(cause, "full_key", None))
    _contract(
        isinstance(error, ConfigCompositionException)
        and isinstance(cause, (ConfigAttributeError, ConfigKeyError))
        and cause.full_key == full_key,
        "hydra-core",
        "an unknown key's ConfigCompositionException is raised from OmegaConf's ConfigKeyError whose full_key is the "
        "first part of the override's key that is missing",
        seen,
    )


def test_hydras_basic_sweeper_lists_a_sweeps_jobs_in_the_order_the_summary_numbers_them():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    symbol = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper.split_arguments (tasks/sweep_summary.py)"
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        overrides = OverridesParser.create().parse_overrides(["a=1,2", "b=x,y"])
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    except (ImportError, AttributeError, TypeError) as missing:
        _contract(False, "hydra-core", symbol, missing)
    expected = [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"], ["a=2", "b=y"]]
    _contract(jobs == expected, "hydra-core", f"{symbol} gives the jobs of a=1,2 b=x,y as {expected}", jobs)


class TakesOnlyPath:
    def __init__(self, path: str = "x") -> None:
        self.path = path


def test_an_unexpected_config_key_is_named_only_in_the_messages_of_python_and_hydra():
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from apa_lightning.errors import FULL_KEY, TARGET_CALL, UNEXPECTED_ARGUMENT

    config = OmegaConf.create({"node": {"_target_": f"{__name__}.TakesOnlyPath", "pth": "y"}})
    with pytest.raises(InstantiationException) as failed:
        instantiate(config.node)
    message, cause = str(failed.value), failed.value.__cause__
    unexpected = UNEXPECTED_ARGUMENT.search(str(cause))
    _contract(
        isinstance(cause, TypeError)
        and unexpected is not None
        and unexpected.groups() == ("TakesOnlyPath.__init__", "pth"),
        "Python",
        f"Hydra's InstantiationException is raised from the TypeError of an unexpected keyword, worded as "
        f"{UNEXPECTED_ARGUMENT.pattern}",
        repr(cause),
    )
    target, key = TARGET_CALL.match(message), FULL_KEY.search(message)
    _contract(
        target is not None and target[1] == f"{__name__}.TakesOnlyPath" and key is not None and key[1] == "node",
        "hydra-core",
        f"InstantiationException's message names the target ({TARGET_CALL.pattern}) and the key ({FULL_KEY.pattern})",
        message,
    )


@pytest.mark.parametrize(
    "distribution, module, pattern",
    [
        ("lightning", "lightning.pytorch.trainer.connectors.logger_connector.logger_connector", re.escape(TIP)),
        ("submitit", "submitit.core.core", re.escape(SACCT)),
        *(("torch" if "LeafSpec" in message else "lightning", MODULES[at], message) for at, message in WARNED),
    ],
)
def test_the_lines_the_console_drops_are_still_worded_so(distribution, module, pattern):
    """The console drops these log lines and warnings by their text (nothing else marks them): the text must still
    be in the library's source, or the noise comes back. An f-string's fields are read as a number."""
    source = inspect.getsource(pytest.importorskip(module))
    literals = " ".join(re.sub(r"\{[^}]*\}", "3", text) for text in re.findall(r'"([^"\n]*)"', source))
    _contract(re.search(pattern, literals) is not None, distribution, f"{module} says {pattern!r}", "not in its source")
