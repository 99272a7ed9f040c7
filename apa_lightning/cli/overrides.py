"""The check of the command line's overrides before Hydra runs: the config is composed with them (Hydra's compose
API, about 0.1 s, torch-free), and when that fails the user gets one ``error:`` paragraph naming the key or config
and the closest names instead of Hydra's message, its ``+key`` advice and its config search path. A sweep's keys
(``hydra.sweeper.params`` of a preset included) and the interpolations that use them are checked too. Nothing is
written: Hydra has not made a run directory yet."""

from __future__ import annotations

import importlib.resources
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

from apa_lightning.cli.config_checks import check_config
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
SHELL_SPECIAL = frozenset(" \t'\"$`\\*?[]{}()<>|&;#~")  # characters bash or zsh would expand or strip
CHOICES_NAMED = ("experiment", "model", "data")  # the config choices a message about a missing key names
ABSENT = object()  # OmegaConf.select's default for a key the config does not have
# the config whose defaults list names a missing config: only in Hydra's message (tests/test_library_contracts.py)
ASKED_BY = re.compile(r"In '([^']+)'")


def _hydra_arguments(argv: list[str]) -> Any | None:
    """``argv`` as Hydra's own argument parser reads it, or None when Hydra would not compose this tool's config
    with the overrides (help, info, another config) or refuses the options itself (it then says why). Hydra has no
    public way to its parser, and a copy would miss its next option: tests/test_library_contracts.py pins it."""
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
    """The values a sweep override stands for, as override values (the first is composed; each one, for a config
    group): each value of a list, ``range`` or ``glob``; the lower bound of an Optuna ``interval``; the value itself
    when it is no sweep."""
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
    """The existing keys ``key`` may have meant: under the longest part of it that exists, those of its name or of
    the closest name (difflib): next to it if there are any (``trainer.max_epoch``), else the most alike of all
    (``model.lr``, ``trainr.max_epochs``)."""
    parent, _, name = key.rpartition(".")
    found, node = _existing_part(key, config)
    prefix = f"{found}." if found else ""
    keys = [f"{prefix}{k}" for k in _dotted_keys(node) if key.startswith("hydra") or not k.startswith("hydra.")]
    names = {k.rpartition(".")[2] for k in keys if not k.rpartition(".")[2].startswith("_")}
    matched = [name] if name in names else get_close_matches(name, sorted(names), n=1)
    similar = [k for k in keys if k.rpartition(".")[2] in matched]
    siblings = [k for k in similar if k.rpartition(".")[0] == parent]
    return siblings or sorted(similar, key=lambda k: -SequenceMatcher(None, key, k).ratio())[:3]


def _keys_around(key: str, config: dict[str, Any]) -> str:
    """``(keys of trainer: ...)``: the keys of the longest part of ``key``'s parent that exists, shortened."""
    found, node = _existing_part(key, config)
    names = [str(k) for k in node if not str(k).startswith("_") and (found or k != "hydra")]  # what a user sets
    shown = ", ".join(names[:KEYS_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > KEYS_SHOWN else "")
    return f"(keys of {found}: {shown})" if found else f"(top-level keys: {shown})"


def _or(names: list[str], word: str = "or") -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {word} {names[-1]}"


def _shell_word(text: str) -> str:
    """``text`` as one word to paste into bash or zsh: as it is, or in double quotes where the shell would expand or
    strip some of it (quotes, spaces, brackets)."""
    if not SHELL_SPECIAL.intersection(text):
        return text
    return '"' + re.sub(r'(["$`\\])', r"\\\1", text) + '"'


def unknown_key_message(key: str, argument: str, config: dict[str, Any]) -> str:
    """The message for an override of ``key`` (``argument`` as typed) that ``config`` (a plain dict, composed
    without it) does not have."""
    found, node = _existing_part(key, config)
    if found and not isinstance(node, dict):
        return f"{key} is not a setting of this config: {found} holds a single value, not settings; set {found}=..."
    launcher = OmegaConf.select(OmegaConf.create(config), "hydra.launcher._target_", default="") or ""
    if key.startswith("hydra.launcher.") and launcher.endswith("BasicLauncher"):
        return (
            f"{key} is a setting of a launcher this command does not use (it runs Hydra's basic one, one job after "
            "another): add hydra/launcher=local_parallel (parallel processes: n_jobs) or hydra/launcher=slurm."
        )
    similar = [k for k in _similar_keys(key, config) if k != key]
    guess = f" Did you mean {_or(similar)}?" if similar else ""
    return (
        f"{key} is not a setting of this config.{guess} {_keys_around(key, config)} To add a new key on purpose, "
        f"write {_shell_word('+' + argument.lstrip('+'))}."
    )


def missing_config_message(
    group: str, name: str, options: list[str], asked_by: str | None = None, group_exists: bool = False
) -> str:
    """The message for a config ``name`` that config group ``group`` does not have (``options`` are its configs);
    ``asked_by``: the config file whose defaults list named it, when the command line did not; ``group_exists``:
    the group is there even though ``options`` is empty (it holds only other groups)."""
    where = f"{asked_by} asks for {group}={name}" if asked_by else f"{group}={name}"
    plugin = PLUGIN_CONFIGS.get(f"{group}/{name}")
    if plugin:
        return (
            f"{where}: that config comes with the Hydra plugin {plugin}, which is not installed: "
            "pip install -e .[sweeps]"
        )
    close = get_close_matches(name, options, n=1)
    guess = f" Did you mean {close[0]}?" if close else ""
    choices = f" Choose one of: {', '.join(options)}." if options else ""
    if not options and not group_exists:
        choices = f" There is no config group {group}."
    return f"{where}: there is no {group} config named {name}.{guess}{choices}"


def several_values_message(sweep: Override) -> str:
    """The message for a sweep (``sweep``, parsed) on a command line that runs one job."""
    key, _, values = sweep.input_line.partition("=")
    message = f"{sweep.input_line} is a sweep over several values: add -m to run one job for each"
    if sweep.value_type != ValueType.SIMPLE_CHOICE_SWEEP:
        return f"{message}."
    listed, text = _shell_word(f"{key}=[{values}]"), _shell_word(f"{key}='{values}'")
    return f"{message}, or write a list as {listed} or a text with commas as {text}."


def missing_swept_keys_message(keys: list[str], preset: str | None, choices: str, example: str | None) -> str:
    """The message for the keys ``hydra.sweeper.params`` sweeps that the config (``choices``: its model and data,
    ``model=ae, data=digits``) does not have; ``preset``: the ``hparams_search`` config the command line names,
    ``example``: a choice that has the keys (``experiment=cifar10_cnn_v3``)."""
    them = "it" if len(keys) == 1 else "them"
    owner = f"hparams_search={preset}" if preset else "hydra.sweeper.params"
    use = f"use a model that has {them}, e.g. {example}," if example else f"use a model that has {them}"
    drop = "drop the preset" if preset else f"drop {them} from hydra.sweeper.params"
    return f"{owner} sweeps {_or(keys, 'and')}, which this config does not have ({choices}): {use} or {drop}."


def _composition_message(exc: Exception, overrides: list[Override], arguments: list[str]) -> str:
    """The ``error:`` paragraph for Hydra's exception ``exc`` composing ``arguments`` (``overrides`` parsed)."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        typed = any(o.key_or_group == group and name in _named_configs(o) for o in overrides)
        source = ASKED_BY.match(str(exc))
        asked_by = None if typed or not source else source[1]
        if exc.options:
            return missing_config_message(group, name, list(exc.options), asked_by)
        # Hydra lists no options for a config a list names (logger=[tensorbord]): the loader knows them
        repository = GlobalHydra.instance().config_loader().repository
        options = repository.get_group_options(group, results_filter=ObjectType.CONFIG)
        return missing_config_message(group, name, options, asked_by, repository.group_exists(group))
    dropped = next((o.input_line for o in overrides if o.key_or_group == "callbacks" and not _named_configs(o)), None)
    dropped = dropped or next((a for a in arguments if a in ("callbacks=none", "callbacks=null")), None)
    if dropped and _composes([a for a in arguments if a != dropped]):
        # the model (or data) config still chooses its family's callbacks into the group
        return (
            f"{dropped}: the callbacks cannot be removed as a group, since the model or data config adds its "
            "family's own to them (callbacks/family; callbacks=none is model=yolo's, whose ultralytics loop runs "
            "none). Switch them off one by one instead with callbacks.<name>=null; "
            "python -m apa_lightning --cfg job lists them under callbacks."
        )
    cause = exc.__cause__  # OmegaConf's error for the override's key, or for the first part of it that is missing
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        named = (cause.full_key, f"{cause.full_key}.")
        at = next((i for i, o in enumerate(overrides) if o.key_or_group.startswith(named)), None)
        key = overrides[at].key_or_group if at is not None else cause.full_key
        argument = overrides[at].input_line if at is not None else f"{key}=..."
        others = [a for i, a in enumerate(arguments) if i != at]
        for attempt in (others, []):  # the suggestions come from the config without the bad override
            try:
                config = compose("train", overrides=attempt, return_hydra_config=True)
                return unknown_key_message(key, argument, OmegaConf.to_container(config, resolve=False))
            except (HydraException, OmegaConfBaseException):
                continue
    return _one_paragraph(str(exc))


def _composes(arguments: list[str]) -> bool:
    """Whether the config composes with ``arguments``."""
    try:
        compose("train", overrides=arguments)
    except (HydraException, OmegaConfBaseException):
        return False
    return True


def _named_configs(override: Override) -> list[str]:
    """The config names an override of a config group gives: each value of a sweep, each item of a list."""
    try:
        names = _first_values(override)
        value = None if override.is_sweep_override() else override.value()
    except HydraException:
        return []
    return [*names, *(str(v) for v in value)] if isinstance(value, list) else names


def _is_group(key: str, loader: Any) -> bool:
    """Whether ``key`` (a key of ``hydra.sweeper.params`` or an override) names a config group, not a setting."""
    return "/" in key or loader.repository.group_exists(key.lstrip("+~"))


def _sweep_params(config: Any) -> dict[str, str]:
    """``hydra.sweeper.params`` of the composed ``config`` as key: override value text (empty without params)."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    return {str(k): str(v) for k, v in params.items_ex(resolve=False)} if params else {}


def _preset(attempt: list[str]) -> str | None:
    """The ``hparams_search`` preset a command line (``attempt``, one value of each sweep) names, if any."""
    return next((a.split("=", 1)[1] for a in attempt if re.fullmatch(r"\+{0,2}hparams_search=[\w.-]+", a)), None)


def _param_overrides(params: dict[str, str], overrides: list[Override], loader: Any) -> list[Override]:
    """The sweep's ``params`` that the command line (``overrides``) does not set, parsed; not those that add or
    delete a key (``+x``, ``~x``), nor those the sweeper refuses (it says what is wrong with them)."""
    parser, given, parsed = OverridesParser.create(), {o.key_or_group for o in overrides}, []
    for key, value in params.items():
        if key not in given and not key.startswith(("+", "~")):
            try:
                parsed.append(parser.parse_override(f"{key}={value}"))
            except OverrideParseException:
                continue
            parsed[-1].config_loader = loader  # a glob(...) lists the group's configs
    return parsed


def _missing_keys(config: Any, keys: list[str]) -> list[str]:
    return [k for k in keys if OmegaConf.select(config, k, default=ABSENT, throw_on_resolution_failure=False) is ABSENT]


def _preset_example(preset: str, keys: list[str]) -> str | None:
    """An ``experiment=`` or ``model=`` choice that has ``keys`` with the preset (one of this package's): one its
    header comment runs it with, else the one its defaults list picks; None when neither has them."""
    try:
        text = importlib.resources.files("apa_lightning.conf").joinpath(f"hparams_search/{preset}.yaml").read_text()
    except OSError:  # a preset from another config folder: no example
        return None
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    named = re.findall(r"\b((?:experiment|model)=[\w.-]+)", header)
    named += [f"{g}={n}" for g, n in re.findall(r"override /(experiment|model):\s*([\w.-]+)", text)]
    for choice in dict.fromkeys(named):
        try:
            config = compose("train", overrides=[f"hparams_search={preset}", choice], return_hydra_config=True)
        except Exception:  # an example that does not compose is not offered
            continue
        if not _missing_keys(config, keys):
            return choice
    return None


def _missing_swept_keys(config: Any, attempt: list[str], loader: Any) -> str | None:
    """The message for keys of ``hydra.sweeper.params`` (``model.net.dropout``) that the composed ``config``
    (composed from ``attempt``) does not have; None when it has them all. Config groups (``model``,
    ``model/optimizer``) and keys the sweep adds or deletes (``+x``, ``~x``) are not settings of the config."""
    keys = [k for k in _sweep_params(config) if not k.startswith(("+", "~")) and not _is_group(k, loader)]
    missing = _missing_keys(config, keys)
    if not missing:
        return None
    preset = _preset(attempt)
    chosen = OmegaConf.select(config, "hydra.runtime.choices", default={})
    choices = ", ".join(f"{g}={chosen[g]}" for g in CHOICES_NAMED if chosen.get(g))
    example = _preset_example(preset, missing) if preset else None
    return missing_swept_keys_message(missing, preset, choices, example)


def _set_values(overrides: list[Override], loader: Any) -> dict[str, list[Any]]:
    """The values ``overrides`` (the command line's, then the sweep's) give each setting (not a config group), as
    Hydra reads them: each value of a list or ``range`` sweep, none for an ``interval``."""
    values: dict[str, list[Any]] = {}
    for override in overrides:
        key = override.key_or_group
        if key in values or override.is_delete() or override.is_interval_sweep() or _is_group(key, loader):
            continue
        try:
            values[key] = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except HydraException:
            continue
    return values


def _unknown_choice(config: Any, values: dict[str, list[Any]], preset: str | None) -> str | None:
    """The message for a value (``setting=row5``) that an interpolation of the composed ``config`` uses as a key of
    a node that lacks it (``${settings.${setting}.lr}``); None when each value is a key there."""
    plain = OmegaConf.to_container(config, resolve=False)
    plain.pop("hydra", None)
    text = OmegaConf.to_yaml(plain)  # the interpolations as written
    for key, choices in values.items():
        for table in dict.fromkeys(re.findall(r"\$\{(?:([\w.]+)\.)?\$\{\s*" + re.escape(key) + r"\s*\}", text)):
            node: Any = plain
            for part in table.split(".") if table else []:
                node = node.get(part) if isinstance(node, dict) else None
            names = [str(name) for name in node] if isinstance(node, dict) else []
            unknown = next((v for v in choices if names and str(v) not in names), None)
            if unknown is not None:
                owner = f"hparams_search={preset}" if preset else "this config"
                where = f"the {table}" if table else "the top-level keys"
                return f"{key}={unknown} is not one of {where} of {owner}: {', '.join(names)}"
    return None


def check_overrides(argv: list[str]) -> None:
    """Raise ApaError when the config cannot be composed with the overrides in ``argv`` (the command line
    after ``python -m apa_lightning``).

    A sweep is checked with the first value of each swept key, and the config is composed once more for each other
    value of a swept config group (``model=ae,vae``, or a preset's ``model/optimizer: sgd,asgd``), the other sweeps
    at their first value. In a multirun, each key ``hydra.sweeper.params`` sweeps must be in the composed config;
    and each value a key is set or swept to must resolve the interpolations that use it (``setting=row5`` for
    ``${settings.${setting}.lr}``). Command lines Hydra does not compose this tool's config for
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
            "commas, brackets or an = in quotes: \"key='a value'\"."
        ) from None
    with initialize_config_module("apa_lightning.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        first: list[str] = []  # the command line with each sweep at its first value
        swept: list[str] = []  # those first values
        other_values: list[tuple[int, str]] = []  # (position, override) of a swept group's other configs
        for override in overrides:
            override.config_loader = loader  # a glob(...) sweep lists the group's configs
            group = override.key_or_group
            if not override.is_delete() and _is_group(group, loader) and "null" in _first_values(override):
                alone = " (in a command of its own: a sweep cannot leave it out of some jobs)"
                raise ApaError(  # Hydra raises a ValueError with a traceback
                    f"{override.input_line}: a config group cannot be null; to leave {group} out, write "
                    f"{_shell_word('~' + group)}{alone if override.is_sweep_override() else ''}."
                )
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
            # each config of a swept group is composed (the other sweeps at their first value): one composition
            # per value, not one per combination
            if loader.get_group_options(override.key_or_group, results_filter=ObjectType.CONFIG):
                other_values += [(len(first), f"{key}={v}") for v in values[1:]]
            first.append(f"{key}={values[0]}")
            swept.append(first[-1])
        attempts = [(first, swept), *(([*first[:at], value, *first[at + 1 :]], [value]) for at, value in other_values)]
        for attempt, checked_with in attempts:  # grows by the config groups a preset sweeps
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
                first_config = composed
                mode = OmegaConf.select(composed, "hydra.mode")  # a preset may set MULTIRUN
                multirun = arguments.multirun or getattr(mode, "name", mode) == "MULTIRUN"
                params = _sweep_params(composed) if multirun else {}  # a run without -m does not sweep them
                preset_sweeps = _param_overrides(params, overrides, loader)
                groups = [o for o in preset_sweeps if _is_group(o.key_or_group, loader)]
                # each config of a group the preset sweeps (model/optimizer: sgd,asgd) is composed
                attempts += [
                    ([*first, f"{o.key_or_group}={n}"], [f"{o.key_or_group}={n}"])
                    for o in groups
                    for n in _named_configs(o)
                    if n != "null"
                ]
                values = _set_values([*overrides, *preset_sweeps], loader)
            problem = _missing_swept_keys(composed, attempt, loader) if multirun else None
            problem = problem or _unknown_choice(composed, values, _preset(attempt))
            if problem:
                raise ApaError(problem)
    sweep = next((o for o in overrides if o.is_sweep_override()), None)
    if sweep is not None and not multirun:
        raise ApaError(several_values_message(sweep))
    if multirun:
        check_swept_values(first_config, values)


def check_swept_values(config: Any, values: dict[str, list[Any]]) -> None:
    """Raise ApaError when a value a sweep gives a setting (``model.optimizer.lr=0.1,abc``) is one the config checks
    refuse (``config_checks.check_config``), before the sweep starts its first job rather than when that value's
    job does. Each value is put into ``config`` (composed with every sweep at its first value) alone; config groups
    were composed for each of their values already."""
    for key, choices in values.items():
        node = OmegaConf.select(config, key.lstrip("+~"), default=ABSENT, throw_on_resolution_failure=False)
        if node is ABSENT or OmegaConf.is_config(node):  # a new key (+key=...), a config group
            continue
        for value in choices:
            trial = config.copy()
            OmegaConf.update(trial, key.lstrip("+~"), value, force_add=True)
            try:
                check_config(trial)
            except OmegaConfBaseException:  # ${hydra:...}, a job's ${oc.env:...}: the trial checks itself
                continue
