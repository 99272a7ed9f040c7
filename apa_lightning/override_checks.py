"""The check of the command line's overrides before Hydra runs: the config is composed with them (Hydra's compose
API, about 0.1 s, torch-free), and when that fails the user gets one ``error:`` paragraph naming the key or config
and the closest names instead of Hydra's message, its ``+key`` advice and its config search path. Nothing is
written: Hydra has not made a run directory yet."""

from __future__ import annotations

import io
import os
import re
from contextlib import redirect_stderr, redirect_stdout
from difflib import SequenceMatcher, get_close_matches
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from apa_lightning.errors import ApaError

# Hydra options after which the overrides are not composed into this tool's config (help, another config)
NOT_CHECKED = ("help", "hydra_help", "shell_completion", "info", "experimental_rerun")
OTHER_CONFIG = ("config_path", "config_name", "config_dir")
KEYS_SHOWN = 20  # keys of the parent listed next to a suggestion
# configs that the Hydra plugins of the [sweeps] extra bring
PLUGIN_CONFIGS = {
    "hydra/launcher/joblib": "hydra-joblib-launcher",
    "hydra/launcher/submitit_local": "hydra-submitit-launcher",
    "hydra/launcher/submitit_slurm": "hydra-submitit-launcher",
    "hydra/sweeper/optuna": "hydra-optuna-sweeper",
}


def _hydra_arguments(argv: list[str]) -> Any | None:
    """``argv`` as Hydra's own argument parser reads it, or None when Hydra would not compose this tool's config
    with the overrides (help, info, another config) or refuses the options itself (it then says why)."""
    from hydra._internal.utils import get_args_parser

    try:
        with redirect_stderr(io.StringIO()), redirect_stdout(io.StringIO()):
            arguments = get_args_parser().parse_args(argv)
    except SystemExit:
        return None
    if any(getattr(arguments, name) for name in (*NOT_CHECKED, *OTHER_CONFIG)):
        return None
    return arguments


def _one_paragraph(text: str) -> str:
    """Hydra's message as one paragraph of sentences, without the config search path it appends."""
    lines = [" ".join(line.split()) for line in text.split("Config search path:", 1)[0].splitlines()]
    return " ".join(line if line[-1] in ".:!?" else f"{line}." for line in lines if line)


def _first_values(override: Override) -> list[str]:
    """The values a sweep override stands for, as override values (the first is composed): each value of a list,
    ``range`` or ``glob``; the lower bound of an Optuna ``interval``; the value itself when it is no sweep."""
    if not override.is_sweep_override():
        return [override.input_line.split("=", 1)[1]] if "=" in (override.input_line or "") else []
    if override.is_interval_sweep():
        return [str(override.value().start)]
    return list(override.sweep_string_iterator())


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key of a plain nested dict as a dotted path, containers and leaves alike."""
    keys = []
    if isinstance(node, dict):
        for name, child in node.items():
            key = f"{prefix}{name}"
            keys += [key, *_dotted_keys(child, f"{key}.")]
    return keys


def _settings(node: dict[str, Any], top: bool) -> list[str]:
    """The keys of ``node`` a user sets: not ``_target_`` and the like, not ``hydra`` at the top."""
    return [str(k) for k in node if not str(k).startswith("_") and not (top and k == "hydra")]


def _closest(word: str, candidates: list[str]) -> list[str]:
    """The candidates closest to ``word``: the best of difflib's close matches and those nearly as close."""
    close = get_close_matches(word, candidates, n=3)
    ratios = [SequenceMatcher(None, word, c).ratio() for c in close]
    return [c for c, r in zip(close, ratios, strict=True) if r >= ratios[0] - 0.05]


def _existing_part(key: str, config: dict[str, Any]) -> tuple[str, Any]:
    """The longest part of ``key``'s parent that ``config`` has ('' for the top level), and its node."""
    node: Any = config
    found: list[str] = []
    for part in key.split(".")[:-1]:
        if not isinstance(node, dict) or part not in node:
            break
        node, found = node[part], [*found, part]
    return ".".join(found), node


def _similar_keys(key: str, config: dict[str, Any]) -> list[str]:
    """The existing keys ``key`` may have meant: a close name next to it (``trainer.max_epoch``), else keys of
    the same or a close name under the longest part of it that exists (``model.lr``, ``trainr.max_epochs``)."""
    parent, _, name = key.rpartition(".")
    found, node = _existing_part(key, config)
    if found == parent and isinstance(node, dict):
        close = _closest(name, _settings(node, not parent))
        if close:
            return [f"{parent}.{c}" if parent else c for c in close]
    prefix = f"{found}." if found else ""
    keys = [f"{prefix}{k}" for k in _dotted_keys(node) if key.startswith("hydra") or not k.startswith("hydra.")]
    names = {k.rpartition(".")[2] for k in keys if not k.rpartition(".")[2].startswith("_")}
    matched = [name] if name in names else _closest(name, sorted(names))
    similar = [k for k in keys if k.rpartition(".")[2] in matched]
    return sorted(similar, key=lambda k: -SequenceMatcher(None, key, k).ratio())[:3]


def _keys_around(key: str, config: dict[str, Any]) -> str:
    """``(keys of trainer: ...)``: the keys of the longest part of ``key``'s parent that exists, shortened."""
    found, node = _existing_part(key, config)
    names = _settings(node, not found)
    shown = ", ".join(names[:KEYS_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > KEYS_SHOWN else "")
    return f"(keys of {found}: {shown})" if found else f"(top-level keys: {shown})"


def _or(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def unknown_key_message(key: str, argument: str, config: dict[str, Any]) -> str:
    """The message for an override of ``key`` (``argument`` as typed) that ``config`` (a plain dict, composed
    without it) does not have."""
    found, node = _existing_part(key, config)
    if found and not isinstance(node, dict):
        return f"{key} is not a setting of this config: {found} holds a single value, not settings; set {found}=..."
    similar = [k for k in _similar_keys(key, config) if k != key]
    guess = f" Did you mean {_or(similar)}?" if similar else ""
    return (
        f"{key} is not a setting of this config.{guess} {_keys_around(key, config)} To add a new key on purpose, "
        f"write +{argument.lstrip('+')}."
    )


def missing_config_message(group: str, name: str, options: list[str], asked_by: str | None = None) -> str:
    """The message for a config ``name`` that config group ``group`` does not have (``options`` are its configs);
    ``asked_by``: the config file whose defaults list named it, when the command line did not."""
    where = f"{asked_by} asks for {group}={name}" if asked_by else f"{group}={name}"
    plugin = PLUGIN_CONFIGS.get(f"{group}/{name}")
    if plugin:
        return (
            f"{where}: that config comes with the Hydra plugin {plugin}, which is not installed: "
            "pip install -e .[sweeps]"
        )
    close = get_close_matches(name, options, n=1)
    guess = f" Did you mean {close[0]}?" if close else ""
    choices = f" Choose one of: {', '.join(options)}." if options else f" There is no config group {group}."
    return f"{where}: there is no {group} config named {name}.{guess}{choices}"


def several_values_message(sweep: Override) -> str:
    """The message for a sweep (``sweep``, parsed) on a command line that runs one job."""
    key, _, values = sweep.input_line.partition("=")
    message = f"{sweep.input_line} is a sweep over several values: add -m to run one job for each"
    if sweep.value_type != ValueType.SIMPLE_CHOICE_SWEEP:
        return f"{message}."
    return f"{message}, or write a list as {key}=[{values}] or a text with commas as {key}='{values}'."


def _composition_message(exc: Exception, overrides: list[Override], arguments: list[str]) -> str:
    """The ``error:`` paragraph for Hydra's exception ``exc`` composing ``arguments`` (``overrides`` parsed)."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        typed = any(o.key_or_group == group and name in _first_values(o) for o in overrides)
        source = re.match(r"In '([^']+)'", str(exc))
        return missing_config_message(group, name, list(exc.options or []), None if typed or not source else source[1])
    unknown = re.match(r"Could not override '([^']+)'", str(exc))
    if unknown and isinstance(exc.__cause__, (ConfigAttributeError, ConfigKeyError)):
        key = unknown[1]
        at = next((i for i, o in enumerate(overrides) if o.key_or_group == key), None)
        argument = overrides[at].input_line if at is not None else f"{key}=..."
        others = [a for i, a in enumerate(arguments) if i != at]
        for attempt in (others, []):  # the suggestions come from the config without the bad override
            try:
                return unknown_key_message(key, argument, _composed(attempt))
            except (HydraException, OmegaConfBaseException):
                continue
    return _one_paragraph(str(exc))


def _composed(arguments: list[str]) -> dict[str, Any]:
    config = compose("train", overrides=arguments, return_hydra_config=True)
    return OmegaConf.to_container(config, resolve=False)


def check_overrides(argv: list[str]) -> None:
    """Raise ApaError when the config cannot be composed with the overrides in ``argv`` (the command line
    after ``python -m apa_lightning``).

    A sweep is checked with the first value of each swept key, and every value of a swept config group
    (``model=ae,vae``) must name one of its configs. Command lines Hydra does not compose this tool's config for
    (``--help``, ``--info``, ``--config-dir``, ...) and ``HYDRA_FULL_ERROR=1`` (Hydra's own report) are left to
    Hydra, and so is an error that is not Hydra's or OmegaConf's (say, a config file that is not YAML).
    """
    arguments = _hydra_arguments(argv)
    if arguments is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    modes = [
        flag
        for flag, given in (("--run", arguments.run), ("-m", arguments.multirun), ("--cfg", arguments.cfg))
        if given
    ]
    if len(modes) > 1:  # Hydra raises a ValueError with a traceback
        raise ApaError(
            f"{' and '.join(modes)} cannot be given together: to see the config of one job of a sweep, drop -m and "
            "give each swept key one value (--cfg job model.optimizer.lr=0.1)."
        )
    try:
        overrides = OverridesParser.create().parse_overrides(arguments.overrides)
    except OverrideParseException as exc:
        raise ApaError(
            f"{exc.override} cannot be read as an override: {_one_paragraph(exc.message)} Put a value with spaces, "
            "commas, brackets or an = in quotes: key='a value'."
        ) from None
    with initialize_config_module("apa_lightning.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        first: list[str] = []  # the command line with each sweep at its first value
        swept: list[str] = []  # those first values
        other_values: list[tuple[int, str]] = []  # (position, override) of a swept group's other configs
        for override in overrides:
            override.config_loader = loader  # a glob(...) sweep lists the group's configs
            if not override.is_sweep_override():
                first.append(override.input_line)
                continue
            try:
                values = _first_values(override)
            except HydraException:  # Hydra's sweeper says what is wrong with it
                continue
            if not values:
                continue
            key = override.get_key_element()
            options = loader.get_group_options(override.key_or_group, results_filter=ObjectType.CONFIG)
            # a value outside the group's configs (or from a search path the overrides add) is composed on its own
            other_values += [(len(first), f"{key}={v}") for v in values[1:] if options and v not in (*options, "null")]
            first.append(f"{key}={values[0]}")
            swept.append(first[-1])
        attempts = [(first, swept), *(([*first[:at], value, *first[at + 1 :]], [value]) for at, value in other_values)]
        for attempt, checked_with in attempts:
            try:
                composed = compose("train", overrides=attempt, return_hydra_config=True)
            except (HydraException, OmegaConfBaseException) as exc:
                message = _composition_message(exc, overrides, attempt)
                failing = message.split(" ", 1)[0]  # the key the message is about
                others = [v for v in checked_with if v.split("=", 1)[0].lstrip("+~") != failing]
                if others and not isinstance(exc, MissingConfigException):
                    message += f" (The sweep was checked with {', '.join(others)}.)"
                raise ApaError(message) from None
            except Exception:  # not a problem of the overrides: Hydra reports it in its own words
                return
            if attempt is first:
                mode = OmegaConf.select(composed, "hydra.mode")
    sweep = next((o for o in overrides if o.is_sweep_override()), None)
    if sweep is not None and not arguments.multirun and getattr(mode, "name", mode) != "MULTIRUN":
        raise ApaError(several_values_message(sweep))
