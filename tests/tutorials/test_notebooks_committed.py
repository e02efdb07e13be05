"""The notebooks are committed clean, in sync with their jupytext scripts, and follow the tutorials' conventions.

Each ``notebooks/NN_name.ipynb`` is paired with ``notebooks/NN_name.py`` (jupytext percent format, see
``notebooks/jupytext.toml``): maintainers edit the script (ruff lints it), readers open the notebook.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _cells(notebook: nbformat.NotebookNode) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in notebook.cells]


def pair_differences(ipynb: Path) -> list[str]:
    """Where ``ipynb`` and its paired ``.py`` disagree (cell kind, source or tags); empty when in sync."""
    script = ipynb.with_suffix(".py")
    if not script.is_file():
        return [f"{ipynb.name} has no paired script {script.name}"]
    from_notebook = _cells(nbformat.read(ipynb, as_version=4))
    from_script = _cells(jupytext.read(script))
    problems = []
    if len(from_notebook) != len(from_script):
        problems.append(f"{len(from_notebook)} cells in {ipynb.name}, {len(from_script)} in {script.name}")
    for index, (a, b) in enumerate(zip(from_notebook, from_script, strict=False)):
        if a != b:
            problems.append(f"cell {index} differs")
    return problems


def test_every_notebook_has_a_script_and_vice_versa():
    scripts = {p.stem for p in NOTEBOOK_DIR.glob("*.py")}
    assert {p.stem for p in NOTEBOOKS} == scripts
    assert len(NOTEBOOKS) >= 6


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a cell has outputs; strip them before committing"
            assert cell.execution_count is None, f"{path.name}: a cell has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_matches_its_script(path: Path):
    assert pair_differences(path) == [], (
        f"{path.name} and {path.stem}.py are out of sync; run `jupytext --sync notebooks/{path.stem}.py`"
    )


def test_sync_check_catches_an_edited_copy(tmp_path: Path):
    source = NOTEBOOKS[1]
    for suffix in (".ipynb", ".py"):
        shutil.copy(source.with_suffix(suffix), tmp_path / (source.stem + suffix))
    copy = tmp_path / source.name
    assert pair_differences(copy) == []
    script = copy.with_suffix(".py")
    script.write_text(script.read_text(encoding="utf-8").replace("SEED = 42", "SEED = 7"), encoding="utf-8")
    assert pair_differences(copy) != []
    script.unlink()
    assert pair_differences(copy) == [f"{copy.name} has no paired script {script.name}"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_title_explanation_and_parameters(path: Path):
    notebook = nbformat.read(path, as_version=4)
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "learn" in first.source.lower()
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one papermill 'parameters' cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_on_a_colab_gpu_runtime(path: Path):
    metadata = nbformat.read(path, as_version=4).metadata
    assert metadata.get("accelerator") == "GPU" and metadata.get("colab", {}).get("gpuType") == "T4"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_stand_in_parameter_and_no_twin_parameters(path: Path):
    import ast

    notebook = nbformat.read(path, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    names = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert "STAND_IN" in names
    assert not [n for n in names if n.startswith(("TOY", "TINY"))], "stand-in settings live in one marked cell"
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    for private in ("tiny_pipeline_path", "toy_pipeline_path", "NBHELPERS_TINY", "NBHELPERS_TOY"):
        assert private not in code  # the loader finds a stand-in's files
