"""The command line's overrides checked before Hydra makes a directory: the config is composed with them (Hydra's
compose API, torch-free), and a failure becomes one ``error:`` paragraph naming the key or config and the closest
names. A sweep is checked before its first job: each config of a swept group, the keys it sweeps, each value."""

from __future__ import annotations

import io
import os
import re
from contextlib import redirect_stderr, redirect_stdout
from difflib import SequenceMatcher, get_close_matches
from importlib.resources import files
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, InterpolationKeyError, OmegaConfBaseException

from apa_lightning.cli.config_checks import check_config
from apa_lightning.errors import ApaError

# Hydra options after which the overrides are not composed into this tool's config (help, another config)
NOT_CHECKED = ("help", "hydra_help", "shell_completion", "info", "experimental_rerun")
OTHER_CONFIG = ("config_path", "config_name", "config_dir")
KEYS_SHOWN = 20  # keys of the parent listed next to a suggestion
PLUGIN_CONFIGS = {  # configs that the Hydra plugins of the [sweeps] extra bring
    "hydra/launcher/joblib": "hydra-joblib-launcher",
    "hydra/launcher/submitit_local": "hydra-submitit-launcher",
    "hydra/launcher/submitit_slurm": "hydra-submitit-launcher",
    "hydra/sweeper/optuna": "hydra-optuna-sweeper",
}
INSTALL_PLUGINS = "pip install -e .[sweeps]"
SHELL_SPECIAL = frozenset(" \t'\"$`\\*?[]{}()<>|&;#~")  # characters bash or zsh would expand or strip
NEEDED_GROUPS = ("model", "data", "trainer", "paths")  # a run reads these: ~data is refused
# but not these tasks: eval / predict take the checkpoint's model (~model: checkpoint_lookup), eda trains nothing
NOT_NEEDED = {"eval": ("model",), "predict": ("model",), "eda": ("model", "trainer")}
ABSENT = object()  # OmegaConf.select's default for a key the config does not have
# the config whose defaults list names a missing config: only in Hydra's message (tests/test_library_contracts.py)
ASKED_BY = re.compile(r"In '([^']+)'")


def _hydra_arguments(argv: list[str]) -> Any | None:
    """``argv`` as Hydra's argument parser reads it; None when Hydra composes no config of this tool with it (help,
    another config) or refuses it itself. Hydra's parser is private: tests/test_library_contracts.py pins it."""
    from hydra._internal.utils import get_args_parser

    try:
        with redirect_stderr(io.StringIO()), redirect_stdout(io.StringIO()):
            arguments = get_args_parser().parse_args(argv)
    except SystemExit:
        return None
    return None if any(getattr(arguments, name) for name in (*NOT_CHECKED, *OTHER_CONFIG)) else arguments


def _one_paragraph(text: str) -> str:
    """Hydra's message as one paragraph of sentences, without the config search path it appends."""
    lines = [" ".join(line.split()) for line in text.split("Config search path:", 1)[0].splitlines()]
    return " ".join(line if line[-1] in ".:!?" else f"{line}." for line in lines if line)


def _options(group: str, **kwargs: Any) -> list[str]:
    """The configs of ``group`` (with ``results_filter=None``: its sub-groups too)."""
    return GlobalHydra.instance().config_loader().get_group_options(group, **kwargs)


def _is_group(key: str) -> bool:
    """Whether ``key`` (of an override or of ``hydra.sweeper.params``) names a config group, not a setting."""
    return "/" in key or bool(_options(key.lstrip("+~"), results_filter=None))


def _values(override: Override) -> list[str]:
    """An override's values as text: each of a sweep (an ``interval``: its lower bound) or of a list, else the value;
    none when Hydra cannot list them (its sweeper says why). ApaError for a sweep of no values."""
    if "=" not in override.input_line:
        return []
    try:
        if override.is_interval_sweep():
            return [str(override.value().start)]
        if override.is_sweep_override():
            if values := list(override.sweep_string_iterator()):
                return values
            options = _options(override.key_or_group)  # a glob that matches no config
            listed = f"; the {override.key_or_group} configs: {', '.join(options)}" if options else ""
            raise ApaError(f"{override.input_line} cannot be swept: it gives no value{listed}.")
        value = override.value()
    except HydraException:
        return []
    except ValueError as exc:  # range(1,3,0)
        raise ApaError(f"{override.input_line} cannot be swept: {exc}.") from None
    return [str(v) for v in value] if isinstance(value, list) else [override.get_value_element_as_str()]


def _or(names: list[str], word: str = "or") -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {word} {names[-1]}"


def _shell_word(text: str) -> str:
    """``text`` as one word for bash or zsh: double-quoted where the shell would expand or strip some of it."""
    return '"' + re.sub(r'(["$`\\])', r"\\\1", text) + '"' if SHELL_SPECIAL.intersection(text) else text


def unknown_key_message(key: str, argument: str, config: dict[str, Any]) -> str:
    """The message for an override of ``key`` (``argument`` as typed) that ``config`` (a plain dict, composed
    without it) does not have: the keys it may have meant under the longest part of it that exists, those of its
    name elsewhere (``model.lr``) first, else the closest (``trainer.max_epoch``, ``weight_decy``)."""
    node, found = config, []
    for part in key.split(".")[:-1]:
        if not isinstance(node, dict) or part not in node:
            break
        node, found = node[part], [*found, part]
    parent = ".".join(found)
    if found and not isinstance(node, dict):
        return f"{key} is not a setting of this config: {parent} holds a single value, not settings; set {parent}=..."
    launcher = OmegaConf.select(OmegaConf.create(config), "hydra.launcher._target_", default="") or ""
    if key.startswith("hydra.launcher.") and launcher.endswith("BasicLauncher"):
        return (
            f"{key} is a setting of a launcher this command does not use (it runs Hydra's basic one, one job after "
            "another): add hydra/launcher=local_parallel (parallel processes: n_jobs) or hydra/launcher=slurm."
        )
    # keys below the parent, compared without it (its shared prefix would make any key look close)
    keys = [k for k in _flat(node) if not k.rpartition(".")[2].startswith("_")]  # _target_: not a setting
    keys = [k for k in keys if key.startswith("hydra") or not k.startswith("hydra.")]
    rest, leaf = key[len(parent) + 1 :] if parent else key, key.rpartition(".")[2]
    close_leaf = get_close_matches(leaf, sorted({k.rpartition(".")[2] for k in keys}), n=1)
    similar = [k for k in keys if k.rpartition(".")[2] == leaf] or get_close_matches(rest, keys, n=1)
    similar = similar or [k for k in keys if k.rpartition(".")[2] in close_leaf]
    similar = [f"{parent}.{k}" if parent else k for k in similar]
    similar = sorted((k for k in similar if k != key), key=lambda k: -SequenceMatcher(None, key, k).ratio())[:3]
    names = [str(k) for k in node if not str(k).startswith("_") and (found or k != "hydra")]  # what a user sets
    shown = ", ".join(names[:KEYS_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > KEYS_SHOWN else "")
    return (
        f"{key} is not a setting of this config.{f' Did you mean {_or(similar)}?' if similar else ''} "
        f"({f'keys of {parent}' if parent else 'top-level keys'}: {shown}) To add a new key on purpose, write "
        f"{_shell_word('+' + argument.lstrip('+'))}."
    )


def missing_config_message(
    group: str, name: str, options: list[str], asked_by: str | None = None, group_exists: bool = False
) -> str:
    """The message for a config ``name`` that ``group`` (configs: ``options``; ``group_exists`` though it holds only
    groups) lacks; ``asked_by``: the config whose defaults list named it, when the command line did not."""
    where = f"{asked_by} asks for {group}={name}" if asked_by else f"{group}={name}"
    if plugin := PLUGIN_CONFIGS.get(f"{group}/{name}"):
        return f"{where}: that config comes with the Hydra plugin {plugin}, which is not installed: {INSTALL_PLUGINS}"
    close = get_close_matches(name, options, n=1)
    message = f"{where}: there is no {group} config named {name}." + (f" Did you mean {close[0]}?" if close else "")
    if options:
        return f"{message} Choose one of: {', '.join(options)}."
    return message if group_exists else f"{message} There is no config group {group}."


def _compose(attempt: list[str]) -> Any | None:
    """The config composed with ``attempt`` (with Hydra's node), or None when it cannot be."""
    try:
        return compose("train", overrides=attempt, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException):
        return None


def _checked_compose(attempt: list[str], checked_with: list[str], overrides: list[Override]) -> Any | None:
    """The config composed with ``attempt``; ApaError naming the key or config (and the sweep values ``checked_with``)
    when Hydra refuses it, None for an error that is not the overrides' (Hydra reports it in its own words)."""
    try:
        return compose("train", overrides=attempt, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        error = exc
    except Exception:  # not a problem of the overrides (a config file that is not YAML)
        return None
    if isinstance(error, MissingConfigException) and "/" in (error.missing_cfg_file or ""):
        group, _, name = error.missing_cfg_file.rpartition("/")
        typed = f"{group}={name}" in attempt or any(o.key_or_group == group and name in _values(o) for o in overrides)
        source = None if typed else ASKED_BY.match(str(error))
        # Hydra lists no options for a config a list names (logger=[tensorbord]): the loader knows them
        options, exists = list(error.options or _options(group)), bool(_options(group, results_filter=None))
        raise ApaError(missing_config_message(group, name, options, source and source[1], exists))
    message, cause = _one_paragraph(str(error)), error.__cause__
    dropped = next((o.input_line for o in overrides if o.key_or_group == "callbacks" and not _values(o)), None)
    dropped = dropped or next((a for a in attempt if a in ("callbacks=none", "callbacks=null")), None)
    if dropped and _compose([a for a in attempt if a != dropped]) is not None:  # the family's callbacks stay
        message = (
            f"{dropped}: the callbacks cannot be removed as a group, since the model or data config adds its "
            "family's own to them (callbacks/family; callbacks=none is model=yolo's, whose ultralytics loop runs "
            "none). Switch them off one by one instead with callbacks.<name>=null; "
            "python -m apa_lightning --cfg job lists them under callbacks."
        )
    elif isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:  # the key, or its first part
        at = next((i for i, o in enumerate(overrides) if f"{o.key_or_group}.".startswith(f"{cause.full_key}.")), None)
        key = cause.full_key if at is None else overrides[at].key_or_group
        argument = f"{key}=..." if at is None else overrides[at].input_line
        config = _compose([a for i, a in enumerate(attempt) if i != at]) or _compose([])  # without the bad override
        if config is not None:
            message = unknown_key_message(key, argument, OmegaConf.to_container(config, resolve=False))
    about = message.split(" ", 1)[0]  # the key the message is about
    others = [v for v in checked_with if v.split("=", 1)[0].lstrip("+~") != about]
    others = [] if isinstance(error, MissingConfigException) else others
    if any(  # a key of a swept group, which another of its configs may have (model.net.x)
        about.startswith(v.split("=")[0].replace("/", ".") + ".") for v in others
    ):
        others[-1] += "; sweep the configs that have the key in a command of their own"  # +key would fail there
    raise ApaError(message + (f" (The sweep was checked with {', '.join(others)}.)" if others else ""))


def _preset_example(preset: str) -> str | None:
    """The ``experiment=`` or ``model=`` a preset of this package is for: the first its header names, else the one
    it picks (tests/test_configs.py checks that each has the keys its preset sweeps)."""
    try:
        text = files("apa_lightning.conf").joinpath(f"hparams_search/{preset}.yaml").read_text()
    except OSError:  # a preset from another config folder: no example
        return None
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    named = re.findall(r"\b(?:experiment|model)=[\w.-]+", header)
    named += [f"{g}={n}" for g, n in re.findall(r"override /(experiment|model):\s*([\w.-]+)", text)]
    return named[0] if named else None


def _missing_swept_keys(config: Any) -> str | None:
    """The message for settings ``hydra.sweeper.params`` sweeps (not groups, not ``+x`` / ``~x``) that the composed
    ``config`` lacks, with a model of the preset that has them (``_preset_example``); None when it has them all."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    keys = [str(k) for k in params if not str(k).startswith(("+", "~")) and not _is_group(str(k))]
    missing = [
        k for k in keys if OmegaConf.select(config, k, default=ABSENT, throw_on_resolution_failure=False) is ABSENT
    ]
    if not missing:
        return None
    chosen = config.hydra.runtime.choices
    preset, them = chosen.get("hparams_search"), "it" if len(missing) == 1 else "them"
    named = ", ".join(f"{g}={chosen[g]}" for g in ("experiment", "model", "data") if chosen.get(g))
    example = preset and _preset_example(preset)
    use = f"use a model that has {them}" + (f", e.g. {example}," if example else "")
    owner, drop = (
        (f"hparams_search={preset}", "the preset")
        if preset
        else ("hydra.sweeper.params", f"{them} from hydra.sweeper.params")
    )
    return f"{owner} sweeps {_or(missing, 'and')}, which this config does not have ({named}): {use} or drop {drop}."


def _needed(line: str, group: str) -> str:
    """The message for ``line``, which leaves out ``group``, a config group every run needs."""
    return f"{line}: a run needs a {group} config; choose one with {group}=<name> ({', '.join(_options(group))})."


def _parsed(texts: list[str], preset: str | None = None) -> list[Override]:
    """``texts`` (the command line's, or the sweep of hparams_search=``preset``) parsed, each able to list a group's
    configs (``glob(...)``); ApaError for one Hydra cannot read, one without a key, a group set to null or chosen
    with a dot (``model.optimizer=sgd``)."""
    origin = f" (in hparams_search={preset}'s hydra.sweeper.params)" if preset else ""
    try:
        overrides = OverridesParser.create().parse_overrides(texts)
    except OverrideParseException as exc:
        raise ApaError(
            f"{exc.override}{origin} cannot be read as an override: {_one_paragraph(exc.message)} Put a value with "
            "spaces, commas, brackets or an = in quotes: \"key='a value'\"."
        ) from None
    for override in overrides:
        override.config_loader = GlobalHydra.instance().config_loader()
        line, group, values = f"{override.input_line}{origin}", override.key_or_group, _values(override)
        if not group:
            raise ApaError(f"{line} has no key: write key=value.")
        if group not in NEEDED_GROUPS and not override.is_delete() and _is_group(group) and "null" in values:
            alone = " (in a command of its own: a sweep cannot leave it out of some jobs)"
            raise ApaError(  # Hydra: a ValueError's traceback
                f"{line}: a config group cannot be null; to leave {group} out, write "
                f"{_shell_word('~' + group)}{alone if override.is_sweep_override() else ''}."
            )
        choice = group.replace(".", "/")
        options = _options(choice) if "." in group and not override.is_delete() else []
        if named := [v for v in values if v in options]:  # model.optimizer=sgd for model/optimizer=sgd
            raise ApaError(
                f"{line} sets {group} to the text {named[0]}; to choose the {choice} config {named[0]}, "
                f"write {choice}={named[0]}."
            )
    return overrides


def check_overrides(argv: list[str]) -> None:
    """Raise ApaError when the config cannot be composed with the overrides in ``argv`` (after ``python -m
    apa_lightning``). A sweep is composed with each key at its first value, and once more for each other config of
    a swept group (``model=ae,vae``; a preset's ``model/optimizer: sgd,asgd``); then its values are checked. Command
    lines Hydra composes no config of this tool for (``--help``), ``HYDRA_FULL_ERROR=1`` and errors that are not the
    overrides' (a config file that is not YAML) are left to Hydra."""
    arguments = _hydra_arguments(argv)
    if arguments is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    modes = [f for f, on in (("--run", arguments.run), ("-m", arguments.multirun), ("--cfg", arguments.cfg)) if on]
    if len(modes) > 1:  # Hydra raises a ValueError with a traceback
        raise ApaError(
            f"{' and '.join(modes)} cannot be given together: to see the config of one job of a sweep, drop -m and "
            "give each swept key one value (--cfg job model.optimizer.lr=0.1)."
        )
    with initialize_config_module("apa_lightning.conf", version_base="1.3"):
        overrides = _parsed(arguments.overrides)
        # each sweep at its first value (one Hydra cannot list stays as it is: its sweeper says what is wrong)
        sweeps = {at: values for at, o in enumerate(overrides) if o.is_sweep_override() and (values := _values(o))}
        key = [o.get_key_element() for o in overrides]
        first = [f"{key[at]}={sweeps[at][0]}" if at in sweeps else o.input_line for at, o in enumerate(overrides)]
        # before composing: ~paths beside paths.x=1 cannot be composed
        task = next((o.input_line.partition("=")[2] for o in overrides if o.key_or_group == "task"), "train")
        for o in overrides:
            group = o.key_or_group
            if group in NEEDED_GROUPS and (o.is_delete() or "null" in _values(o)):
                if group not in NOT_NEEDED.get(task, ()):
                    raise ApaError(_needed(o.input_line, group))
                if not o.is_delete():  # Hydra: a ValueError's traceback
                    raise ApaError(
                        f"{o.input_line}: a config group cannot be null; to leave {group} out, write ~{group}."
                    )
        config = _checked_compose(first, [first[at] for at in sweeps], overrides)
        if config is None:
            return
        given = {o.key_or_group for o in overrides}
        multirun = arguments.multirun or getattr(config.hydra.mode, "name", None) == "MULTIRUN"  # a preset's
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None) if multirun else None
        texts = [f"{k}={v}" for k, v in (params.items_ex(resolve=False) if params else []) if k not in given]
        preset = _parsed([t for t in texts if t[0] not in "+~"], config.hydra.runtime.choices.get("hparams_search"))
        # a job for each other config of a group the command line sweeps, and for each of one the preset sweeps
        jobs = [
            ([*first[:at], f"{key[at]}={v}", *first[at + 1 :]], f"{key[at]}={v}")
            for at in sweeps
            if _is_group(overrides[at].key_or_group)
            for v in sweeps[at][1:]
        ]
        jobs += [
            ([*first, f"{o.key_or_group}={v}"], f"{o.key_or_group}={v}")
            for o in preset
            if _is_group(o.key_or_group)
            for v in _values(o)
        ]
        for attempt, swept in [(first, None), *jobs]:
            composed = config if swept is None else _checked_compose(attempt, [swept], overrides)
            if composed is None:
                return
            if problem := (_missing_swept_keys(composed) if multirun else None) or _unresolved(composed):
                raise ApaError(problem)
        interval = next((o for o in overrides if o.is_interval_sweep()), None)
        if multirun and interval and str(config.hydra.sweeper.get("_target_")).endswith("BasicSweeper"):
            raise ApaError(  # Hydra: a traceback, after making the sweep directory
                f"{interval.input_line}: Hydra's basic sweeper runs listed values, not an interval: list them "
                "(a,b,c or range(...)), or sample the interval with Optuna: add hydra/sweeper=optuna."
            )
        if sweeps and not multirun:
            sweep = overrides[next(iter(sweeps))]
            text = _shell_word(f"{sweep.get_key_element()}='{sweep.input_line.partition('=')[2]}'")
            value = OmegaConf.select(config, sweep.key_or_group, default=None, throw_on_resolution_failure=False)
            commas = sweep.value_type == ValueType.SIMPLE_CHOICE_SWEEP and isinstance(value, str)
            quote = f", or quote it to give one text with commas: {text}" if commas else ""
            raise ApaError(f"{sweep.input_line} is a sweep over several values: add -m to run one job for each{quote}.")
        if multirun:
            check_swept_values(config, [*overrides, *preset])


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """A plain nested dict as ``{dotted key: value}``, containers and leaves alike."""
    flat: dict[str, Any] = {}
    for name, child in node.items() if isinstance(node, dict) else ():
        flat[f"{prefix}{name}"] = child
        flat.update(_flat(child, f"{prefix}{name}."))
    return flat


def _unresolved(config: Any) -> str | None:
    """The message for an interpolation of ``config`` (outside Hydra's node) whose key it lacks: a value missing from
    the table a setting looks it up in (``setting=row5`` for ``${settings.${setting}.lr}``), a misspelt key
    (``${trainer.max_epoch}``), one removed (``${seed}`` after ``~seed``); None when there is none."""
    plain = OmegaConf.to_container(config, resolve=False)
    preset = plain.pop("hydra")["runtime"]["choices"].get("hparams_search")
    for key, text in _flat(plain).items():
        if not isinstance(text, str) or "${" not in text:
            continue
        try:
            OmegaConf.select(config, key)
        except OmegaConfBaseException as exc:  # ${hydra:...} too, which resolves only in the run
            lookup = re.search(r"\$\{([\w.]+)\.\$\{\s*([\w.]+)\s*\}", text)  # ${table.${setting}...}
            table = lookup and OmegaConf.select(config, lookup[1], default=None, throw_on_resolution_failure=False)
            value = lookup and OmegaConf.select(config, lookup[2], default=None, throw_on_resolution_failure=False)
            if OmegaConf.is_dict(table) and str(value) not in map(str, table):  # setting=row5, setting=1
                owner = f"hparams_search={preset}" if preset else "this config"
                return f"{lookup[2]}={value} is not one of the {lookup[1]} of {owner}: {', '.join(map(str, table))}"
            if isinstance(exc, InterpolationKeyError):
                return f"{key}={text} cannot be resolved: {str(exc).splitlines()[0]}. Set {key}, or the key it names."
    return None


def check_swept_values(config: Any, overrides: list[Override]) -> None:
    """Raise ApaError for a value ``overrides`` (the command line's, then a preset's sweep: the first of a key counts)
    give a setting that the config checks refuse (``lr=0.1,abc``), before the first job rather than in that value's.
    Each value, as Hydra reads it, is put into ``config`` alone; config groups were composed for each of theirs."""
    checked = set()
    for override in overrides:
        key = override.key_or_group.lstrip("+~")
        node = OmegaConf.select(config, key, default=ABSENT, throw_on_resolution_failure=False)
        if key in checked or override.is_delete() or override.is_interval_sweep() or OmegaConf.is_config(node):
            continue
        checked.add(key)
        try:
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except HydraException:  # its sweeper says what is wrong
            continue
        for value in values if node is not ABSENT else ():  # a new key (+key=...): nothing to check it against
            trial = config.copy()
            try:
                OmegaConf.update(trial, key, value, force_add=True)
            except OmegaConfBaseException as exc:  # a typed key of Hydra's own config (hydra.job.chdir)
                raise ApaError(f"{key}={value} is not allowed: {str(exc).splitlines()[0]}.") from None
            if problem := _unresolved(trial):
                raise ApaError(problem)
            try:
                check_config(trial)
            except OmegaConfBaseException:  # ${hydra:...}, a job's ${oc.env:...}: the trial checks itself
                continue
