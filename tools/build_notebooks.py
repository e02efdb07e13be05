"""Write every notebook in ``notebooks/`` from its source module in ``tools/notebook_sources``.

Run ``python -m tools.build_notebooks`` from the repository root after editing a source module; the test
suite checks the committed notebooks match their sources and carry no outputs.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from tools import notebook_sources
from tools.nbbuild import write_notebook

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def sources() -> dict[str, list]:
    """``{notebook file name: cells}`` for every source module."""
    result = {}
    for module_info in sorted(pkgutil.iter_modules(notebook_sources.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"tools.notebook_sources.{module_info.name}")
        result[module.NOTEBOOK] = module.CELLS
    return result


def main() -> None:
    for name, cells in sources().items():
        print(write_notebook(NOTEBOOK_DIR / name, cells))


if __name__ == "__main__":
    main()
