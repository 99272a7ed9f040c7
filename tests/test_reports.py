import csv

import numpy as np
import pytest
import torch
from sklearn.metrics import classification_report

from apa_lightning.metrics.classification import (
    format_report,
    headline,
    mean_class_accuracy,
    per_class_metrics,
    report_rows,
    write_report,
)

# rows: true class, columns: predicted
CONFUSION = torch.tensor([[5, 1, 0], [2, 3, 1], [0, 0, 4]])


def test_per_class_metrics_match_a_hand_computation():
    m = per_class_metrics(CONFUSION)
    assert m["support"].tolist() == [6, 6, 4]
    assert m["precision"].tolist() == pytest.approx([5 / 7, 3 / 4, 4 / 5])
    assert m["recall"].tolist() == pytest.approx([5 / 6, 3 / 6, 4 / 4])
    f1_0 = 2 * (5 / 7) * (5 / 6) / (5 / 7 + 5 / 6)
    assert m["f1"][0].item() == pytest.approx(f1_0)
    assert mean_class_accuracy(CONFUSION) == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    numbers = headline(CONFUSION)
    assert numbers["acc"] == pytest.approx(12 / 16)
    assert numbers["mca"] == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)


def test_classes_never_predicted_or_absent_score_zero_not_nan():
    m = per_class_metrics(torch.tensor([[3, 0, 0], [1, 0, 0], [0, 0, 0]]))
    assert m["precision"].tolist()[1:] == [0.0, 0.0] and not torch.isnan(m["f1"]).any()
    assert mean_class_accuracy(torch.tensor([[3, 0, 0], [1, 0, 0], [0, 0, 0]])) == pytest.approx(0.5)  # class 2 absent


def test_report_agrees_with_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 4, 300))
    confusion = torch.zeros(4, 4, dtype=torch.long)
    for t, p in zip(y_true, y_pred, strict=True):
        confusion[t, p] += 1
    names = ["a", "b", "c", "d"]
    expected = classification_report(y_true, y_pred, target_names=names, output_dict=True)
    for row in report_rows(confusion, names):
        reference = expected[row["class"]]
        assert row["precision"] == pytest.approx(reference["precision"])
        assert row["recall"] == pytest.approx(reference["recall"])
        assert row["f1"] == pytest.approx(reference["f1-score"])
        assert row["support"] == reference["support"]
    assert headline(confusion)["acc"] == pytest.approx(expected["accuracy"])


def test_written_report_has_a_row_per_class_and_the_figure(tmp_path):
    write_report(CONFUSION, ["cat", "dog", "frog"], tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "classification_report.csv")))
    assert [r["class"] for r in rows] == ["cat", "dog", "frog", "macro avg", "weighted avg"]
    assert float(rows[1]["recall"]) == pytest.approx(0.5)
    text = (tmp_path / "classification_report.txt").read_text()
    assert "accuracy" in text and "mCA" in text and "0.7500" in text
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    assert format_report(report_rows(CONFUSION, ["a", "b", "c"]), 0.75, 0.78).count("\n") == 10
