"""The notebooks are committed clean, built from their sources, and follow the tutorials' conventions."""

from pathlib import Path

import nbformat
import pytest

from tools.build_notebooks import NOTEBOOK_DIR, sources

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def test_every_notebook_has_a_source_and_vice_versa():
    assert {p.name for p in NOTEBOOKS} == set(sources())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a cell has outputs; strip them before committing"
            assert cell.execution_count is None, f"{path.name}: a cell has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_matches_its_source(path: Path):
    notebook = nbformat.read(path, as_version=4)
    expected = sources()[path.name]
    assert [c.source for c in notebook.cells] == [c.source for c in expected], (
        f"{path.name} differs from tools/notebook_sources; run `python -m tools.build_notebooks`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_title_explanation_and_parameters(path: Path):
    notebook = nbformat.read(path, as_version=4)
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "learn" in first.source.lower()
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one papermill 'parameters' cell"
