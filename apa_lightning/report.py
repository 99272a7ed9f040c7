"""Sweep summaries: one row per run of a multirun, rebuilt from the run directories.

``python -m apa_lightning.report <sweep dir>`` (re)writes ``summary.md`` and ``summary.csv``; the
``SweepSummary`` Hydra callback does the same when a sweep ends. Torch-free, so it loads fast.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def _run_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep (those with a ``.hydra/overrides.yaml``), in job order."""
    runs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(runs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def collect_runs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One record per job: its overrides and what its ``metrics.json`` says (``unfinished`` when it has none,
    e.g. a job still running or killed)."""
    rows = []
    for run in _run_dirs(Path(sweep_dir)):
        overrides = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "overrides.yaml"))
        metrics_file = run / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {"status": "unfinished"}
        rows.append({"job": run.name, "overrides": " ".join(overrides), "run_dir": str(run), **metrics})
    return rows


def _score(row: dict[str, Any]) -> float | None:
    value = row.get("best_score")
    return value if row.get("status") == "completed" and value is not None and math.isfinite(value) else None


def summarize(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Table rows sorted by the sweep metric (best first; runs without a score last) and the column names.

    The metric and its direction come from the runs' ``optimized_metric`` and ``optimized_mode``.
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
                "error": row.get("error", ""),
            }
        )
    return table, ["best", "job", "overrides", "status", best_column, *test_columns, "epochs", "wall_time_s", "error"]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def write_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Write ``summary.md`` and ``summary.csv`` into ``sweep_dir``; returns the sorted table rows."""
    sweep_dir = Path(sweep_dir)
    table, columns = summarize(collect_runs(sweep_dir))
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    failed = sum(row["status"] != "completed" for row in table)
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"{len(table)} runs, {failed} not completed; sorted by {columns[4]}, the best marked *.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in table),
    ]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return table


class SweepSummary(Callback):
    """Hydra callback: writes the sweep summary when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            table = write_summary(sweep_dir)
            print(f"Sweep summary ({len(table)} runs): {sweep_dir / 'summary.md'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m apa_lightning.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory, e.g. outputs/multiruns/<id>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a directory")
    table = write_summary(args.sweep_dir)
    if not table:
        parser.error(f"{args.sweep_dir} holds no runs (no */.hydra/overrides.yaml)")
    print((args.sweep_dir / "summary.md").read_text())


if __name__ == "__main__":
    main()
