"""Write a tutorial notebook from a list of cells (maintainers' tool; notebooks are committed output-free).

Usage from a notebook-specific script::

    from tools.nbbuild import md, code, params, write_notebook
    write_notebook("notebooks/01_text_to_image.ipynb", [md("# Title"), params("MODEL = 'deci-v1'"), code("...")])
"""

from __future__ import annotations

from pathlib import Path

import nbformat


def md(source: str) -> nbformat.NotebookNode:
    """A markdown cell."""
    return nbformat.v4.new_markdown_cell(source.strip("\n"))


def code(source: str) -> nbformat.NotebookNode:
    """A code cell."""
    return nbformat.v4.new_code_cell(source.strip("\n"))


def params(source: str) -> nbformat.NotebookNode:
    """The papermill ``parameters`` cell."""
    cell = code(source)
    cell.metadata["tags"] = ["parameters"]
    return cell


def write_notebook(path: str | Path, cells: list[nbformat.NotebookNode]) -> Path:
    """Write cells as an output-free notebook with a Python 3 kernel spec."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = cells
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    notebook.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:02d}"
    nbformat.validate(notebook)
    path = Path(path)
    nbformat.write(notebook, path)
    return path
