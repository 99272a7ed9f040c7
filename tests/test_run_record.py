"""One run-record path: every task writes ``metrics.json`` through ``runs.record.RunRecord`` (running, then
completed, failed with the error, or interrupted with the signal, written once), and a run has one ``metrics.csv``
whatever its loggers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import apa_lightning.runs.record as run_record
from apa_lightning.errors import ApaError, Interrupted
from apa_lightning.tasks.train import compose_config, train

TINY = [
    "model=ae",
    "trainer.accelerator=cpu",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "+trainer.enable_progress_bar=false",
]


@pytest.fixture
def writes(monkeypatch) -> list[tuple[Path, dict]]:
    """Every ``metrics.json`` that ``RunRecord`` writes, as (path, record)."""
    written = []
    original = run_record.write_metrics

    def write_and_note(path, record):
        original(path, record)
        written.append((Path(path), dict(record)))

    monkeypatch.setattr(run_record, "write_metrics", write_and_note)
    return written


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_csv_logger_run_has_one_metrics_csv_and_its_steps_csv_continues_on_resume(make_cfg):
    cfg = make_cfg(*TINY, "logger=csv", "trainer.max_epochs=1")
    train(cfg)
    out = Path(cfg.paths.output_dir)
    assert sorted(out.rglob("metrics.csv")) == [out / "metrics.csv"]
    assert [r["epoch"] for r in read(out / "csv" / "steps.csv") if r.get("val/loss")] == ["0"]
    paths = [f"paths.{k}={v}" for k, v in cfg.paths.items() if k in ("root_dir", "output_dir")]
    train(compose_config([*paths, *TINY, "logger=csv", "trainer.max_epochs=2", f"resume={out}"]))
    assert sorted(out.rglob("metrics.csv")) == [out / "metrics.csv"]
    assert [r["epoch"] for r in read(out / "metrics.csv")] == ["1", "2"]
    steps = read(out / "csv" / "steps.csv")  # Lightning counts epochs from 0; the first start's rows are kept
    assert [r["epoch"] for r in steps if r.get("val/loss")] == ["0", "1"]
    assert [r["epoch"] for r in steps if r.get("test/loss")] == ["1", "2"]  # each start tested its best


def test_train_and_eval_write_their_record_once_completed(make_cfg, writes):
    from apa_lightning.tasks.evaluate import evaluate

    cfg = make_cfg(*TINY, "trainer.max_epochs=1")
    train(cfg)
    out = Path(cfg.paths.output_dir)
    checkpoint = out / "checkpoints" / "last.ckpt"
    evaluated = make_cfg(*TINY, "task=eval", f"ckpt_path={checkpoint}")
    evaluate(evaluated)
    eval_out = Path(evaluated.paths.output_dir)
    assert [(path, record["status"]) for path, record in writes] == [
        (out / "metrics.json", "completed"),
        (eval_out / "metrics.json", "completed"),
    ]
    for path, record in writes:
        assert json.loads(path.read_text()) == record
        assert record["run_dir"] == str(path.parent) and record["wall_time_s"] > 0 and record["test"]
    assert writes[1][1]["checkpoint"] == str(checkpoint) and writes[1][1]["epochs"] == 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    cfg = compose_config([f"paths.root_dir={root}", f"paths.output_dir={root / 'run'}", *TINY, "trainer.max_epochs=1"])
    train(cfg)
    return root / "run" / "checkpoints" / "last.ckpt"


def task_path(name: str, make_cfg, checkpoint: Path):
    """The task function of ``name``, its config, and the step inside its run that the test makes fail."""
    if name == "train":
        return train, make_cfg(*TINY, "trainer.max_epochs=1"), "apa_lightning.tasks.train.build_run"
    if name == "eval":
        from apa_lightning.tasks.evaluate import evaluate

        return (
            evaluate,
            make_cfg(*TINY, "task=eval", f"ckpt_path={checkpoint}"),
            "apa_lightning.tasks.evaluate.build_run",
        )
    from apa_lightning.detection.train import train as detect

    return detect, make_cfg("experiment=kitti_yolo_scratch"), "apa_lightning.detection.train._detection_parts"


@pytest.mark.parametrize("name", ["train", "eval", "detect"])
@pytest.mark.parametrize(
    "error, expected",
    [
        (
            ApaError("data.data_dir=/gone: no such folder"),
            {"status": "failed", "error": "data.data_dir=/gone: no such folder"},
        ),
        (Interrupted(15), {"status": "interrupted", "signal": "SIGTERM", "error": "interrupted by SIGTERM"}),
    ],
    ids=["failed", "interrupted"],
)
def test_each_task_records_how_its_run_ended_once(name, error, expected, make_cfg, checkpoint, writes, monkeypatch):
    task, cfg, step = task_path(name, make_cfg, checkpoint)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(step, fail)
    with pytest.raises(type(error)):
        task(cfg)
    out = Path(cfg.paths.output_dir).resolve()
    ((path, record),) = writes
    assert path == out / "metrics.json" and json.loads(path.read_text()) == record
    assert {key: record.get(key) for key in expected} == expected
    assert record["task_name"] == cfg.task_name and record["run_dir"] == str(out)


def test_a_run_refused_at_its_start_is_recorded_failed(monkeypatch, capsys, tmp_path, writes):
    """Refused before its task opened the record (here: its checkpoint to resume): cli.main records it."""
    from tests.test_resume import only_run_dir, run_cli

    def refuse(cfg):
        raise ApaError("ckpt_path=x.ckpt is not a checkpoint of this tool")

    monkeypatch.setattr("apa_lightning.tasks.train.resume_checkpoint", refuse)
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *TINY)
    assert code == 1 and "error: ckpt_path=x.ckpt is not a checkpoint of this tool" in stderr
    run_dir = only_run_dir(tmp_path)
    ((path, record),) = writes
    assert path == run_dir / "metrics.json" and json.loads(path.read_text()) == record
    assert (record["status"], record["error"]) == ("failed", "ckpt_path=x.ckpt is not a checkpoint of this tool")
    assert (record["best_score"], record["test"], record["task_name"]) == (None, {}, "ae_digits")


def test_the_step_log_of_a_run_from_an_earlier_version_is_kept_on_resume(tmp_path):
    # before, the CSV logger's steps were in csv/metrics.csv, which Lightning's writer deletes when it starts
    from apa_lightning.runs.loggers import ResumableCSVLogger

    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("epoch,step,val/loss\n0,19,0.5\n")
    logger = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    logger.log_metrics({"epoch": 1, "val/loss": 0.25}, step=39)
    logger.save()
    assert [(r["epoch"], r["val/loss"]) for r in read(tmp_path / "csv" / "steps.csv")] == [("0", "0.5"), ("1", "0.25")]
    assert not (tmp_path / "csv" / "metrics.csv").exists()
