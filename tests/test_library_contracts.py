"""Contracts with the installed libraries: each test pins one thing this package relies on that no public API
promises (a private function, the wording of a message), and fails naming the library, its version and what moved."""

from __future__ import annotations

import inspect
import platform
import re
from importlib.metadata import version
from pathlib import Path

import pytest

from apa_lightning.cli.console import DROPPED_LINES, IGNORED_WARNINGS

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
