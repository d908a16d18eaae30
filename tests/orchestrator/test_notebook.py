"""examples/results.ipynb runs top to bottom against the quick study's results (shipped in
examples/data/quick, as a real `make study` wrote them), so the example cannot rot."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_results_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("FIXBENCH_RESULTS", str(EXAMPLES / "data" / "quick"))
    monkeypatch.setenv("FIXBENCH_FIGURES", str(tmp_path))
    notebook = nbformat.read(EXAMPLES / "results.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    outputs = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "6 jobs in ['quick']" in outputs and "\\begin{table}" in outputs
    assert (tmp_path / "rr.svg").stat().st_size > 1000
