"""The notebooks run top to bottom (on runs the tests produce) and are stored without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from digits_runs import digits_sweep

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: strip outputs"
            )


@pytest.mark.slow
def test_compare_losses_notebook_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = digits_sweep()
    assert runs.exit_code == 0
    monkeypatch.setenv("EMBEDLAB_RUNS", str(runs.folder))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    path = NOTEBOOKS / "compare_losses.ipynb"
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # curves, Recall@K, training loss, ranked lists, projection
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "3 runs in" in text and "best run:" in text
