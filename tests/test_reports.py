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

from .conftest import bare_trainer

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


def test_averages_and_logged_mca_match_sklearn_on_a_split_with_a_missing_class():
    from sklearn.metrics import balanced_accuracy_score

    from apa_lightning.models.classifier import accuracy_metrics

    # five classes: 2 never occurs in the labels but is predicted, 4 occurs in neither
    y_true = torch.tensor([0, 0, 0, 1, 1, 1, 1, 3, 3, 3])
    y_pred = torch.tensor([0, 2, 0, 1, 1, 3, 2, 3, 3, 0])
    confusion = torch.zeros(5, 5, dtype=torch.long)
    for t, p in zip(y_true.tolist(), y_pred.tolist(), strict=True):
        confusion[t, p] += 1
    names = ["a", "b", "c", "d", "e"]
    expected = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    rows = {row["class"]: row for row in report_rows(confusion, names)}
    assert list(rows) == ["a", "b", "c", "d", "macro avg", "weighted avg"]  # "e" is in neither, as in sklearn
    for name, key in [*zip("abcd", ("0", "1", "2", "3"), strict=True), ("macro avg",) * 2, ("weighted avg",) * 2]:
        for metric, reference in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert rows[name][metric] == pytest.approx(expected[key][reference]), (name, metric)
    numbers = headline(confusion)
    assert numbers["mca"] == pytest.approx(expected["macro avg"]["recall"])  # 0.4167, not 0.5556 (labels only)
    assert numbers["mca"] != pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert numbers["macro_f1"] == pytest.approx(expected["macro avg"]["f1-score"])
    assert numbers["weighted_f1"] == pytest.approx(expected["weighted avg"]["f1-score"])
    # the metric logged as val/mca and test/mca, accumulated over two batches, is the same number
    logged = accuracy_metrics(5, "test/")
    logits = torch.nn.functional.one_hot(y_pred, 5).float()
    logged.update(logits[:6], y_true[:6])
    logged.update(logits[6:], y_true[6:])
    computed = logged.compute()
    assert computed["test/mca"].item() == pytest.approx(numbers["mca"])
    assert computed["test/acc"].item() == pytest.approx(expected["accuracy"])


def test_written_report_has_a_row_per_class_and_the_figure(tmp_path):
    write_report(CONFUSION, ["cat", "dog", "frog"], tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "classification_report.csv")))
    assert [r["class"] for r in rows] == ["cat", "dog", "frog", "macro avg", "weighted avg"]
    assert float(rows[1]["recall"]) == pytest.approx(0.5)
    text = (tmp_path / "classification_report.txt").read_text()
    assert "accuracy" in text and "mCA" in text and "0.7500" in text
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    assert format_report(report_rows(CONFUSION, ["a", "b", "c"]), 0.75, 0.78).count("\n") == 10


def test_confusion_matrix_rows_are_the_true_classes_from_test_step_to_report(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from apa_lightning.callbacks.classification_report import ClassificationReport
    from apa_lightning.models.classifier import ClassifierModule

    # the "network" passes its input through: every image is a logit vector voting for class 2
    labels = torch.tensor([0, 0, 0, 1, 1, 3])
    logits = torch.nn.functional.one_hot(torch.full((6,), 2), 4).float()
    module = ClassifierModule(
        net={"_target_": "torch.nn.Identity"}, optimizer={"_target_": "torch.optim.SGD", "lr": 0.1}, num_classes=4
    )
    trainer = bare_trainer(callbacks=[ClassificationReport()], default_root_dir=tmp_path)
    trainer.test(module, DataLoader(TensorDataset(logits, labels), batch_size=4), verbose=False)
    assert module.test_confusion.compute()[:, 2].tolist() == [3, 2, 0, 1]  # row = true class, column = predicted
    rows = {r["class"]: r for r in csv.DictReader(open(tmp_path / "classification_report.csv"))}
    assert {c: float(rows[c]["support"]) for c in "0123"} == {"0": 3, "1": 2, "2": 0, "3": 1}
    assert float(rows["2"]["precision"]) == 0 and float(rows["0"]["recall"]) == 0
    assert trainer.callback_metrics["test/mca"].item() == 0.0 and trainer.callback_metrics["test/acc"].item() == 0.0
