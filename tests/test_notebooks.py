import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def outputs_of(notebook) -> list:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


NUMBER = r"[-+]?\d*\.?\d+(?:e[-+]?\d+)?"


def values(outputs: list) -> dict:
    """What a reader takes from the quickstart's outputs, as printed: each epoch line's numbers (not its time),
    the checkpoint tested, the test metrics and the best validation loss."""
    text = "".join(o.get("text", "") for o in outputs)
    epochs = re.finditer(r"^epoch (\S+)(.*)$", text, re.M)
    return {
        "epochs": {m[1]: [float(v) for v in re.findall(rf" ({NUMBER})(?=  )", m[2])] for m in epochs},
        "tested": re.findall(r"Test metrics \((\S+)\):", text),
        "test": {m[1]: float(m[2]) for m in re.finditer(rf"^  (test/\S+)\s+({NUMBER})$", text, re.M)},
        "best": [float(v) for v in re.findall(rf"^best val/loss: ({NUMBER})$", text, re.M)],
    }


def assert_same_values(committed: dict, fresh: dict) -> None:
    """The same epochs, checkpoint and metrics, each number equal but for its last printed digit or so (another
    CPU may round apart)."""
    assert committed["tested"] == fresh["tested"]
    assert list(committed["epochs"]) == list(fresh["epochs"]) and list(committed["test"]) == list(fresh["test"])
    for epoch, numbers in fresh["epochs"].items():
        assert committed["epochs"][epoch] == pytest.approx(numbers, rel=5e-3), epoch
    assert committed["test"] == pytest.approx(fresh["test"], rel=5e-3)
    assert committed["best"] == pytest.approx(fresh["best"], rel=5e-3)


def test_every_notebook_is_executed_by_the_suite():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == ["quickstart"]


def test_the_committed_quickstart_shows_its_outputs_without_machine_paths():
    notebook = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs for cell in code)  # saved executed (docs/development.md), read as it is on GitHub
    assert sum("image/png" in o.get("data", {}) for o in outputs_of(notebook)) == 2
    text = json.dumps([o for o in outputs_of(notebook)])
    assert "/tmp/" not in text and "/home/" not in text and "━" not in text  # no temp paths, no progress bars


@pytest.mark.slow
def test_quickstart_notebook_trains_and_shows_reconstructions(tmp_path):
    notebook = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = outputs_of(notebook)
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # the reconstructions and the curves
    text = "".join(o.get("text", "") for o in outputs)
    assert "epoch 3/3  train/loss " in text and "Test metrics (epoch" in text and "best val/loss:" in text
    assert "Run directory: outputs/quickstart\n" in text and str(tmp_path) not in text
    run_dir = tmp_path / "outputs" / "quickstart"
    record = json.loads((run_dir / "metrics.json").read_text())
    fresh = values(outputs)
    assert fresh["tested"] == [Path(record["best_checkpoint"]).name]  # the best epoch's checkpoint, as printed
    # the committed notebook shows what the code gives now: the same epochs, checkpoint and numbers
    committed = values(outputs_of(nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)))
    assert list(fresh["epochs"]) == ["1/3", "2/3", "3/3"] and len(fresh["test"]) == 4
    assert_same_values(committed, fresh)
