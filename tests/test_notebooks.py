import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def outputs_of(notebook) -> list:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def test_every_notebook_is_executed_by_the_suite():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == ["quickstart"]


def test_the_committed_quickstart_shows_its_outputs_without_machine_paths():
    notebook = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs for cell in code)  # saved executed (README: Development), read as it is on GitHub
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
    assert (tmp_path / "outputs" / "quickstart" / "metrics.json").is_file()
