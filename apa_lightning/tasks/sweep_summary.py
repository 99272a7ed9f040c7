"""Sweep summaries: one row per run of a multirun, rebuilt from the run directories.

``python -m apa_lightning.tasks.sweep_summary <sweep dir>`` (re)writes ``summary.md`` and ``summary.csv``; the
``SweepSummary`` Hydra callback does the same when a sweep ends. Torch-free, so it loads fast.
The table is sorted by the sweep metric, or by a column a preset names (``hydra.callbacks.sweep_summary.sort_by``,
recorded in the sweep's ``multirun.yaml``, so a rebuilt summary keeps that order).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from apa_lightning.errors import ApaError
from apa_lightning.runs.files import write_text_atomically
from apa_lightning.runs.names import job_number, short_value


def _run_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep (those with a ``.hydra/overrides.yaml``; named ``<job number>_<swept
    values>``), in job order."""
    runs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(runs, key=lambda p: (job_number(p) is None, job_number(p) or 0, p.name))


def planned_jobs(sweep_dir: Path) -> list[list[str]]:
    """The overrides of every job a basic-sweeper sweep was to run, from its ``multirun.yaml`` (the order and job
    numbers Hydra's BasicSweeper gives them); empty for other sweepers (Optuna decides as it goes) or when the
    sweep cannot be expanded without loading the configs (``glob(...)``)."""
    # Hydra has no public way to list a sweep's jobs in its order; tests/test_library_contracts.py pins this one
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return []
    sweep = OmegaConf.load(path)
    if OmegaConf.select(sweep, "hydra.sweeper._target_") != "hydra._internal.core_plugins.basic_sweeper.BasicSweeper":
        return []
    params = [f"{key}={value}" for key, value in (OmegaConf.select(sweep, "hydra.sweeper.params") or {}).items()]
    try:
        overrides = OverridesParser.create().parse_overrides([*params, *sweep.hydra.overrides.task])
        with _config_loader() as loader:
            for override in overrides:
                override.config_loader = loader  # a glob(...) sweep lists the group's configs
            return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    except HydraException:  # a sweep these configs cannot expand (a config group that is gone): no planned jobs
        return []


@contextmanager
def _config_loader() -> Iterator[Any]:
    """Hydra's config loader: the running sweep's (its config search path), else one for this tool's configs."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield GlobalHydra.instance().config_loader()
        return
    with initialize_config_module("apa_lightning.conf", version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


def collect_runs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One record per job: its overrides and what its ``metrics.json`` says (``unfinished`` when it has none,
    e.g. a job still running or killed; ``not started`` for a planned job without a directory, e.g. after the
    sweep was interrupted)."""
    rows = []
    for run in _run_dirs(Path(sweep_dir)):
        overrides = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "overrides.yaml"))
        metrics_file = run / "metrics.json"
        try:
            metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {"status": "unfinished"}
        except ValueError as exc:
            raise ApaError(
                f"{metrics_file} is not valid JSON ({exc}); delete it (the run then counts as unfinished) or rerun "
                "that job."
            ) from exc
        job = run.name if job_number(run) is None else str(job_number(run))
        rows.append({"job": job, "overrides": " ".join(overrides), "run_dir": str(run), **metrics})
    if rows:
        started = {row["job"] for row in rows}
        for number, overrides in enumerate(planned_jobs(Path(sweep_dir))):
            if str(number) not in started:
                rows.append({"job": str(number), "overrides": " ".join(overrides), "status": "not started"})
    return rows


def _score(row: dict[str, Any]) -> float | None:
    value = row.get("best_score")
    return value if row.get("status") == "completed" and value is not None and math.isfinite(value) else None


def summarize(
    rows: list[dict[str, Any]], sort_by: str | None = None, descending: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """Table rows sorted by the sweep metric (best first; runs without a score last) and the column names.

    The metric and its direction come from the runs' ``optimized_metric`` and ``optimized_mode``. With
    ``sort_by`` (a column, e.g. ``test/code_bits``) the rows are ordered by that column instead, ascending
    unless ``descending``, ties best first, rows without a value last; the best run is still marked.
    """
    metric = next((r["optimized_metric"] for r in rows if r.get("optimized_metric")), "score")
    sign = -1 if next((r["optimized_mode"] for r in rows if r.get("optimized_mode")), "min") == "max" else 1
    ranked = sorted(rows, key=lambda r: (_score(r) is None, sign * (_score(r) or 0.0)))
    test_columns = sorted({k for r in rows for k in r.get("test", {})})
    best_column = f"best {metric}"
    table = []
    for i, row in enumerate(ranked):
        table.append(
            {
                "best": "*" if i == 0 and _score(row) is not None else "",
                "job": row["job"],
                "overrides": row["overrides"],
                "status": row.get("status", ""),
                best_column: row.get("best_score"),
                **{k: row.get("test", {}).get(k) for k in test_columns},
                "epochs": row.get("epochs"),
                "wall_time_s": row.get("wall_time_s"),
                "images_per_s": row.get("images_per_s"),
                "error": row.get("error", ""),
            }
        )
    columns = ["best", "job", "overrides", "status", best_column, *test_columns, "epochs", "wall_time_s"]
    columns += ["images_per_s", "error"]
    if sort_by:
        if sort_by not in columns:
            if any(row["status"] == "completed" for row in table):  # then a finished run would have it: a typo
                known = ", ".join(c for c in columns if c not in ("best", "overrides", "error"))
                raise ApaError(f"the summary cannot be sorted by {sort_by!r}: no run has it; use one of {known}.")
            columns.insert(columns.index("epochs"), sort_by)  # every run failed: show the column empty
        valued = [row for row in table if row.get(sort_by) is not None]
        valued.sort(key=lambda row: row[sort_by], reverse=descending)  # stable: ties stay best first
        table = valued + [{**row, sort_by: None} for row in table if row.get(sort_by) is None]
    return table, columns


def recorded_order(sweep_dir: Path) -> tuple[str | None, bool]:
    """The ``sort_by`` and ``descending`` of the sweep's ``SweepSummary`` callback, from its ``multirun.yaml``
    (``(None, False)`` when it has none)."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None, False
    callback = OmegaConf.select(OmegaConf.load(path), "hydra.callbacks.sweep_summary", default=None) or {}
    return callback.get("sort_by"), bool(callback.get("descending", False))


DECIMALS = {"wall_time_s": 1, "images_per_s": 0}  # the other numbers are metrics: 4 decimals


def _cell(value: Any, column: str, shared: frozenset[str] = frozenset()) -> str:
    if value is None:
        return ""
    if column == "overrides":  # summary.csv keeps them whole and exact
        kept = [o for o in value.split() if o not in shared]
        value = " ".join(k + sep + short_value(v) for k, sep, v in (o.partition("=") for o in kept))
    if isinstance(value, float):
        return f"{value:.{DECIMALS.get(column, 4)}f}" if math.isfinite(value) else str(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def write_summary(sweep_dir: str | Path, sort_by: str | None = None, descending: bool = False) -> list[dict[str, Any]]:
    """Write ``summary.md`` and ``summary.csv`` into ``sweep_dir`` (order: see ``summarize``); returns the
    sorted table rows."""
    sweep_dir = Path(sweep_dir)
    runs = collect_runs(sweep_dir)
    if not runs:
        raise ApaError(
            f"{sweep_dir} holds no runs of a sweep (no <job>/.hydra/overrides.yaml); pass a multirun directory such "
            "as outputs/multiruns/<id>."
        )
    table, columns = summarize(runs, sort_by, descending)
    direction = "descending" if descending else "ascending"
    order = f"{sort_by} ({direction}), the best by {columns[4]}" if sort_by else f"{columns[4]}, the best"
    rows = io.StringIO()
    writer = csv.DictWriter(rows, fieldnames=columns)
    writer.writeheader()
    writer.writerows(table)
    write_text_atomically(sweep_dir / "summary.csv", rows.getvalue())
    failed = sum(row["status"] != "completed" for row in table)
    # the overrides every run has say nothing about the differences: once above the table, not in every row
    shared = (
        frozenset.intersection(*(frozenset(row["overrides"].split()) for row in table))
        if len(table) > 1
        else frozenset()
    )
    if not any(row["error"] for row in table):
        columns = [c for c in columns if c != "error"]
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"{len(table)} run{'s' if len(table) != 1 else ''}, {failed} not completed; sorted by {order} marked *.",
        *([f"Every run: {' '.join(sorted(shared))}"] if shared else []),
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(_cell(row[c], c, shared) for c in columns) + " |" for row in table),
    ]
    write_text_atomically(sweep_dir / "summary.md", "\n".join(lines) + "\n")
    return table


class SweepSummary(Callback):
    """Hydra callback: writes the sweep summary when a multirun ends, ordered by ``sort_by`` when given."""

    def __init__(self, sort_by: str | None = None, descending: bool = False) -> None:
        self.sort_by, self.descending = sort_by, descending

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Write the sweep's ``multirun.yaml`` before any job starts, as Hydra's BasicSweeper does (Optuna's does
        not): the job directories' names read the swept keys of the command line from it (``run_names``)."""
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(config))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir() or not collect_runs(sweep_dir):
            return
        table = write_summary(sweep_dir, self.sort_by, self.descending)
        # task=eda / predict keep no metrics.json: "unfinished" there is no failure
        failed = sum(row["status"] in ("failed", "interrupted") for row in table)
        print(f"Sweep summary ({len(table)} runs, {failed} failed): {sweep_dir / 'summary.md'}")
        # an Optuna study goes on past failed trials (a NaN at a bad learning rate) and has its best trial
        optuna = str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).endswith("OptunaSweeper")
        if failed == len(table) or (failed and not optuna):
            trials = f"all {failed} trials" if failed == len(table) else f"{failed} of {len(table)} trials"
            print(f"\nerror: {trials} failed; their errors are in {sweep_dir / 'summary.md'}.", file=sys.stderr)
            raise SystemExit(1)

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        """After an Optuna study's last trial: when no trial gave a number (each failed, or its metric was NaN),
        write the summary and end the sweep with an ``error:`` paragraph, status 1. Optuna's sweeper would otherwise
        ask the study for its best trial and stop with a traceback (ValueError) before ``on_multirun_end``."""
        sweeper = OmegaConf.select(config, "hydra.sweeper", default=None)
        if sweeper is None or not str(sweeper.get("_target_", "")).endswith("OptunaSweeper"):
            return
        if OmegaConf.select(config, "hydra.job.num") != sweeper.get("n_trials", 0) - 1:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect_runs(sweep_dir)
        if not rows or any(_score(row) is not None for row in rows):
            return
        write_summary(sweep_dir, self.sort_by, self.descending)
        metric = next((r["optimized_metric"] for r in rows if r.get("optimized_metric")), "the sweep metric")
        print(
            f"\nerror: all {len(rows)} trials failed (none gave a number for {metric}, so Optuna has no best trial); "
            f"their errors are in {sweep_dir / 'summary.md'}.",
            file=sys.stderr,
        )
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m apa_lightning.tasks.sweep_summary", description=__doc__.splitlines()[0]
    )
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory, e.g. outputs/multiruns/<id>")
    parser.add_argument(
        "--sort-by", metavar="COLUMN", help="order by this column (default: as the sweep was configured)"
    )
    parser.add_argument("--descending", action="store_true", help="with --sort-by: largest first")
    args = parser.parse_args(argv)
    try:
        if not args.sweep_dir.is_dir():
            raise ApaError(
                f"{args.sweep_dir} is not a directory; pass a multirun directory such as outputs/multiruns/<id>."
            )
        sort_by, descending = (args.sort_by, args.descending) if args.sort_by else recorded_order(args.sweep_dir)
        write_summary(args.sweep_dir, sort_by, descending)
    except ApaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print((args.sweep_dir / "summary.md").read_text())


if __name__ == "__main__":
    main()
