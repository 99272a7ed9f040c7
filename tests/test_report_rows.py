"""docs/reports.md is the one table of the course documents' experiment rows: this test reads that page and checks,
row by row, that the experiment (or preset sweep trial) it names composes to every setting the report states and to
every choice the page calls ours, building the networks (on the meta device: no memory, no weights) to check their
layer widths. The page is the single source: change a setting in conf/ or on the page alone and this test fails."""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from apa_lightning.tasks.train import compose_config

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reports.md"
EXPERIMENTS = Path(__file__).resolve().parents[1] / "conf" / "experiment"
HEADER = [
    "Row",
    "Section",
    "Run it",
    "Stated by the report (checked)",
    "Not stated: our choice (checked)",
    "The report's numbers",
    "Measured here",
]
DOCUMENTS = ("000", "001", "002", "003", "004")
ABSENT = object()  # a key the composed config does not have


@dataclass(frozen=True)
class Check:
    key: str
    value: str  # as the page writes it
    stated: bool  # the report states it (else: the page says it is our choice)


@dataclass(frozen=True)
class ReportRow:
    document: str
    name: str
    section: str
    runs: tuple[tuple[str, ...], ...]  # each: the overrides of one way to run the row
    checks: tuple[Check, ...]
    measured: str

    @property
    def where(self) -> str:
        return f"{self.document} {self.section} {self.name}"


def spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def parse_checks(cell: str, stated: bool, where: str) -> list[Check]:
    checks = []
    for span in spans(cell):
        key, sep, value = span.partition("=")
        if not sep or not key or " " in key:
            raise ValueError(f"docs/reports.md, {where}: `{span}` in a checked column is not a key=value check")
        checks.append(Check(key, value.strip(), stated))
    return checks


def parse_page(text: str) -> list[ReportRow]:
    """The rows of every table of the page whose header is HEADER, each with its document (the number that starts
    the section heading above it). Raises ValueError naming the line of a malformed row."""
    rows, document, in_table = [], None, False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            document, in_table = line[3:].split()[0], False
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells == HEADER:
            in_table = True
            continue
        if not in_table or set(line) <= set("|-: "):
            continue
        if len(cells) != len(HEADER):
            raise ValueError(f"docs/reports.md line {number}: {len(cells)} cells, the table has {len(HEADER)}")
        name, section, run_it, stated, ours, _, measured = cells
        where = f"{document} {section} {name} (line {number})"
        runs = tuple(tuple(span.split()) for span in spans(run_it))
        checks = parse_checks(stated, True, where) + parse_checks(ours, False, where)
        rows.append(ReportRow(document, name, section, runs, tuple(checks), measured))
    return rows


ROWS = parse_page(PAGE.read_text())


# --- what a composed config says ----------------------------------------------------------------------------------


def build_net(cfg) -> nn.Module | None:
    """``cfg.model.net`` built on the meta device without pretrained weights (offline, no memory); None when the
    model has no ``net`` (YOLO)."""
    if OmegaConf.select(cfg, "model.net") is None:
        return None
    net_cfg = OmegaConf.to_container(cfg.model.net, resolve=True)
    for key in ("pretrained",):
        if key in net_cfg:
            net_cfg[key] = False
    with torch.device("meta"):
        return instantiate(net_cfg)


def trainable_kinds(net: nn.Module) -> list[str]:
    """The classes of the layers that hold a trainable parameter (``[Linear]``: only the classifier trains)."""
    return sorted({type(m).__name__ for m in net.modules() if any(p.requires_grad for p in m.parameters(False))})


NET_FACTS = {
    "conv": lambda net: [m.out_channels for m in net.modules() if type(m) is nn.Conv2d],
    "deconv": lambda net: [m.out_channels for m in net.modules() if type(m) is nn.ConvTranspose2d],
    "bn": lambda net: [m.num_features for m in net.modules() if type(m) is nn.BatchNorm2d],
    "linear": lambda net: [f"{m.in_features}>{m.out_features}" for m in net.modules() if type(m) is nn.Linear],
    "pools": lambda net: sum(type(m) is nn.MaxPool2d for m in net.modules()),
    "dropout": lambda net: [m.p for m in net.modules() if type(m) is nn.Dropout],
    "params": lambda net: sum(p.numel() for p in net.parameters()),
    "activations": lambda net: sorted(
        {type(m).__name__ for m in net.modules() if type(m).__module__ == "torch.nn.modules.activation"}
    ),
    "last": lambda net: type([m for m in net.modules() if not list(m.children())][-1]).__name__,
    "trainable": trainable_kinds,
}


def augmentation(cfg) -> list[tuple[str, dict]]:
    """The training transforms of ``cfg.data.augmentation`` as (class name, arguments), Resize left out (it is the
    image size, not an augmentation)."""
    recipe = OmegaConf.select(cfg, "data.augmentation")
    recipe = OmegaConf.to_container(recipe, resolve=True) if recipe is not None else {}
    steps = []
    for step in recipe.values():
        if step is None:
            continue
        args = dict(step)
        name = args.pop("_target_").rsplit(".", 1)[-1]
        if name != "Resize":
            steps.append((name, args))
    return steps


def value_of(cfg, key: str, net: functools.partial) -> Any:
    """What ``cfg`` gives for ``key``: a config key, ``net.<fact>`` of the built network, ``augmentation``, or
    ``len(<any of these>)``."""
    inner = re.fullmatch(r"len\((.+)\)", key)
    if inner:
        value = value_of(cfg, inner.group(1), net)
        return ABSENT if value is ABSENT else len(value)
    if key == "augmentation":
        return augmentation(cfg)
    if key.startswith("net."):
        built = net()
        if built is None:
            return ABSENT
        fact = key[4:]
        if fact in NET_FACTS:
            return NET_FACTS[fact](built)
        value = getattr(built, fact, ABSENT)
        return list(value) if isinstance(value, tuple) else value
    value = OmegaConf.select(cfg, key, default=ABSENT)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


# --- comparing it with what the page says -----------------------------------------------------------------------


def split_top(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [p for p in [*parts, current.strip()] if p]


def parse_value(text: str) -> Any:
    return "*" if text == "*" else yaml.safe_load(text)


def same(expected: Any, actual: Any) -> bool:
    if expected == "*":
        return actual is not ABSENT and actual is not None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, str) and isinstance(actual, (int, float)):
        try:
            expected = float(expected)
        except ValueError:
            return False
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, list) and isinstance(actual, (list, tuple)):
        return len(expected) == len(actual) and all(same(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(same(expected[k], actual[k]) for k in expected)
    return expected == actual


def same_augmentation(text: str, actual: list[tuple[str, dict]]) -> bool:
    """``none``, or transforms written ``Name(arg=value, ...)``: the same transform classes as composed (any order),
    each composed with at least the arguments written (``*``: set to something)."""
    expected = []
    if text != "none":
        for item in split_top(text):
            match = re.fullmatch(r"(\w+)\((.*)\)", item)
            if not match:
                raise ValueError(f"augmentation item {item!r} is not written Name(arg=value, ...)")
            args = dict(arg.split("=", 1) for arg in split_top(match.group(2)))
            expected.append((match.group(1), {k.strip(): parse_value(v.strip()) for k, v in args.items()}))
    if Counter(name for name, _ in expected) != Counter(name for name, _ in actual):
        return False
    return all(
        any(name == got and all(k in args and same(v, args[k]) for k, v in want.items()) for got, args in actual)
        for name, want in expected
    )


def mismatches(cfg, checks: tuple[Check, ...] | list[Check], where: str) -> list[str]:
    """One line per check that ``cfg`` fails: key, the page's value, the composed value, the report row."""
    net = functools.cache(lambda: build_net(cfg))
    lines = []
    for check in checks:
        actual = value_of(cfg, check.key, net)
        if check.key == "augmentation":
            ok = same_augmentation(check.value, actual)
            shown = ", ".join(f"{n}({', '.join(f'{k}={v}' for k, v in a.items())})" for n, a in actual) or "none"
        else:
            ok = actual is not ABSENT and same(parse_value(check.value), actual)
            shown = "no such key" if actual is ABSENT else repr(actual)
        if not ok:
            said = "the report states" if check.stated else "docs/reports.md gives our choice as"
            lines.append(f"{check.key}: {said} {check.value}, the config composes {shown} ({where})")
    return lines


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    """The resolved training config for a tuple of overrides, as the CLI composes it (cached)."""
    root = tmp_path_factory.mktemp("report_rows")

    @functools.cache
    def composed(overrides: tuple[str, ...]):
        return compose_config([f"paths.root_dir={root}", f"paths.output_dir={root / 'run'}", *overrides])

    return composed


@functools.cache
def preset_trials(preset: str) -> list[tuple[str, ...]]:
    """The overrides of every trial of ``hparams_search=<preset>``: the product of its swept values."""
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_module("apa_lightning.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={preset}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    choices = []
    for parsed in OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()]):
        values = parsed.sweep_string_iterator() if parsed.is_sweep_override() else [parsed.get_value_element_as_str()]
        choices.append([f"{parsed.key_or_group}={v}" for v in values])
    return [(f"hparams_search={preset}", *trial) for trial in itertools.product(*choices)]


def preset_of(run: tuple[str, ...]) -> str | None:
    return next((o.split("=", 1)[1] for o in run if o.startswith("hparams_search=")), None)


def trial_problems(compose, row: ReportRow, run: tuple[str, ...]) -> tuple[list[tuple[str, ...]], list[str]]:
    """The trials of the run's preset that pass every check of ``row``, and the mismatches of the closest one."""
    extra = tuple(o for o in run if not o.startswith("hparams_search="))
    passing, closest = [], None
    for trial in preset_trials(preset_of(run)):
        lines = mismatches(compose((*trial, *extra)), row.checks, row.where)
        if not lines:
            passing.append(trial)
        elif closest is None or len(lines) < len(closest[1]):
            closest = (trial, lines)
    return passing, ([f"closest trial {' '.join(closest[0])}:", *closest[1]] if closest else [])


# --- the tests ----------------------------------------------------------------------------------------------------


def test_the_page_has_the_rows_of_all_five_documents():
    per_document = Counter(row.document for row in ROWS)
    assert set(per_document) == set(DOCUMENTS), per_document
    assert len(ROWS) >= 34
    for row in ROWS:
        assert row.runs and row.section.startswith("§"), row.where
        assert any(c.stated for c in row.checks), f"{row.where}: no checked setting the report states"


def row_id(row: ReportRow) -> str:
    return f"{row.document}-" + re.sub(r"[^A-Za-z0-9.]+", "_", row.name).strip("_")


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_report_row_composes_to_its_settings(compose, row):
    problems = []
    for run in row.runs:
        try:
            if preset_of(run):
                passing, closest = trial_problems(compose, row, run)
                if len(passing) != 1:
                    found = "no trial" if not passing else f"{len(passing)} trials ({passing})"
                    problems += [f"{' '.join(run)}: {found} composes to {row.where}", *(closest if not passing else [])]
            else:
                problems += [f"{' '.join(run)}: {line}" for line in mismatches(compose(run), row.checks, row.where)]
        except Exception as error:  # a missing experiment or preset, a net that does not build
            problems.append(f"{' '.join(run)} ({row.where}): {type(error).__name__}: {str(error).splitlines()[0]}")
    assert not problems, "\n".join(problems)


PRESETS = sorted({preset_of(run) for row in ROWS for run in row.runs} - {None})


@pytest.mark.parametrize("preset", PRESETS)
def test_every_trial_of_a_report_preset_is_one_of_its_rows(compose, preset):
    from hydra.errors import MissingConfigException

    rows = [(row, run) for row in ROWS for run in row.runs if preset_of(run) == preset]
    try:
        preset_trials(preset)
    except MissingConfigException:
        pytest.fail(
            f"hparams_search={preset} does not exist; docs/reports.md runs {[r.where for r, _ in rows]} with it"
        )
    matched = {trial for row, run in rows for trial in trial_problems(compose, row, run)[0]}
    unmatched = [" ".join(t) for t in preset_trials(preset) if t not in matched]
    assert not unmatched, f"trials of hparams_search={preset} that no row of docs/reports.md describes: {unmatched}"


def test_every_experiment_is_on_the_page():
    text = PAGE.read_text()
    missing = [p.stem for p in sorted(EXPERIMENTS.glob("*.yaml")) if f"experiment={p.stem}`" not in text]
    assert not missing, f"experiments docs/reports.md does not mention (as `experiment=<name>`): {missing}"


def test_every_measured_figure_names_its_measurement():
    text = PAGE.read_text()
    for row in ROWS:
        if row.measured.startswith(("needs ", "pending")):
            continue
        refs = re.findall(r"\[(m\d+)\]", row.measured)
        assert refs, f"{row.where}: 'Measured here' is a figure without a [mN] reference: {row.measured}"
        for ref in refs:
            entry = re.search(rf"^- \*\*{ref}\*\*(.*?)(?=^- \*\*|^## |\Z)", text, re.MULTILINE | re.DOTALL)
            assert entry, f"{row.where}: measurement {ref} is not described under Measurements"
            assert re.search(r"commit `[0-9a-f]{7,40}`", entry.group(1)), f"{ref} names no commit"
            assert re.search(r"`[^`]*python[^`]*`", entry.group(1)), f"{ref} names no command"


def test_a_changed_setting_fails_with_the_key_the_values_and_the_row(compose):
    cfg = compose(("experiment=cifar10_cnn_v2",))
    epochs, lr = cfg.trainer.max_epochs, cfg.model.optimizer.lr
    widths = value_of(cfg, "net.conv", functools.cache(lambda: build_net(cfg)))
    wider = [*widths[:-1], widths[-1] * 2]
    checks = [
        Check("trainer.max_epochs", str(epochs + 1), True),
        Check("net.conv", str(wider), True),
        Check("augmentation", "RandomRotation(degrees=5)", False),
        Check("model.optimizer.lr", str(lr), True),  # holds: no line
        Check("model.optimizer.nesterov_typo", "false", False),
    ]
    lines = mismatches(cfg, checks, "001 §1.3 CNN V2")
    assert (
        lines[0]
        == f"trainer.max_epochs: the report states {epochs + 1}, the config composes {epochs} (001 §1.3 CNN V2)"
    )
    assert lines[1] == f"net.conv: the report states {wider}, the config composes {widths} (001 §1.3 CNN V2)"
    assert lines[2].startswith(
        "augmentation: docs/reports.md gives our choice as RandomRotation(degrees=5), the config"
    )
    assert lines[3] == (
        "model.optimizer.nesterov_typo: docs/reports.md gives our choice as false, the config composes no such key "
        "(001 §1.3 CNN V2)"
    )
    assert len(lines) == 4
    # the page's own check of the row fails once its value differs from the composed one
    page_row = next(r for r in ROWS if r.runs == (("experiment=cifar10_cnn_v2",),))
    stated = next(c for c in page_row.checks if c.key == "trainer.max_epochs")
    assert mismatches(cfg, [Check(stated.key, str(epochs + 1), True)], page_row.where)
    assert not mismatches(cfg, [Check(stated.key, str(epochs), True)], page_row.where)


def test_the_parser_reads_rows_and_refuses_a_malformed_one():
    header = "| " + " | ".join(HEADER) + " |"
    row = "| CNN V2 | §1.3 | `experiment=cifar10_cnn_v2` | `trainer.max_epochs=25` | `data.batch_size=128` | x | y |"
    page = f"## 001 — Practical work 1\n\n{header}\n|---|---|---|---|---|---|---|\n{row}\n\nprose `not=a check`\n"
    (parsed,) = parse_page(page)
    assert (parsed.document, parsed.name, parsed.runs) == ("001", "CNN V2", (("experiment=cifar10_cnn_v2",),))
    assert parsed.checks == (Check("trainer.max_epochs", "25", True), Check("data.batch_size", "128", False))
    with pytest.raises(ValueError, match="line 5: 6 cells"):
        parse_page(page.replace(" x | y |", " x |"))
    with pytest.raises(ValueError, match="`yolov3u.pt` in a checked column is not a key=value check"):
        parse_page(page.replace("`data.batch_size=128`", "`yolov3u.pt`"))
