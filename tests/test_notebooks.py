from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_every_notebook_is_executed_by_the_suite():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == ["quickstart"]


@pytest.mark.slow
def test_quickstart_notebook_trains_and_shows_reconstructions(tmp_path):
    notebook = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the reconstructions were shown
    text = "".join(o.get("text", "") for o in outputs)
    assert "best val/loss:" in text
