"""The notebooks' first cell (the bootstrap) and their "Open in Colab" badges, generated from pyproject.toml.

Nothing of the project is importable before a notebook's first cell has run (a fresh Colab runtime holds only
the notebook), so that cell carries the repository URL in its text, written here from ``[project.urls]``. It is
eight lines, the same in every notebook apart from its extras:

- when ``nbhelpers`` does not import, it pip-installs the project's code alone (``--no-deps``): from the checkout
  the notebook sits in (``notebooks/..``), else from the repository (``NBHELPERS_REPO_URL`` overrides it; a
  ``file://`` URL works);
- then :func:`nbhelpers.tutorials.setup.set_up` installs what the notebook's extras need, from the package's own
  metadata, and says what it did (or asks for a restart when pip replaced something already imported).

After changing ``[project.urls]`` or a notebook's extras, run ``python -m nbhelpers.tutorials.bootstrap`` (it
rewrites the notebooks' ``.py`` scripts and syncs their ``.ipynb``; ``--check`` only reports);
``tests/tutorials/test_bootstrap.py`` fails while a notebook or the README disagrees with pyproject.toml.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = PROJECT_ROOT / "pyproject.toml"
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
README = PROJECT_ROOT / "README.md"

#: The extras each notebook installs (besides the core dependencies), by notebook stem.
NOTEBOOK_EXTRAS: dict[str, str] = {
    "00_install_and_environment": "notebooks",
    "01_text_to_image": "notebooks",
    "02_sd15_vs_decidiffusion": "notebooks,quality,training",
    "03_dreambooth": "notebooks,training",
    "04_endpoints": "notebooks,serving,azure",
    "05_daam_heat_maps": "notebooks",
    "06_many_prompts": "notebooks,scale",
}

#: The Colab badge image (Colab's own).
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"

#: The first code cell of every notebook: ``{repo_url}`` and ``{extras}`` are filled in by :func:`bootstrap_cell`.
_CELL_TEMPLATE = """\
# Set-up (Colab, Paperspace, a fresh runtime): installs nbhelpers, then what this notebook needs, and says so.
import importlib.util, os, subprocess, sys  # noqa: E401, I001

if importlib.util.find_spec("nbhelpers") is None:  # the project's code: the checkout this notebook is in, or git
    url = os.environ.get("NBHELPERS_REPO_URL", "{repo_url}")
    source = ".." if os.path.isdir("../nbhelpers") else f"git+{{url}}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", source], check=True)
from nbhelpers.tutorials.setup import set_up  # noqa: E402

set_up("{extras}")  # this notebook's extras: installs what is missing or too old, or says to restart
"""


def read_pyproject(path: Path = PYPROJECT) -> dict[str, Any]:
    """The parsed ``pyproject.toml``."""
    # Imported here: a notebook's first cell imports this module on a fresh runtime, where Python 3.10 may not have
    # tomli yet (nbhelpers is installed there with --no-deps, and reads its installed metadata, not this file).
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def repository_url(pyproject: dict[str, Any]) -> str:
    """``[project.urls] Repository``, the one place the repository URL is written."""
    url = pyproject.get("project", {}).get("urls", {}).get("Repository")
    if not url:
        raise ValueError("pyproject.toml has no [project.urls] Repository entry; add the repository's URL there.")
    return url.rstrip("/").removesuffix(".git")


def colab_url(repo_url: str, notebook: str, branch: str = "main") -> str:
    """Colab's "open from GitHub" URL of ``notebooks/<notebook>.ipynb`` in a github.com repository."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", repo_url)
    if match is None:
        raise ValueError(f"Colab opens notebooks from github.com repositories only; {repo_url!r} is not one.")
    return f"https://colab.research.google.com/github/{match[1]}/{match[2]}/blob/{branch}/notebooks/{notebook}.ipynb"


def badge_markdown(repo_url: str, notebook: str) -> str:
    """The "Open in Colab" badge of ``notebook`` (a notebook stem such as ``"01_text_to_image"``)."""
    return f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({colab_url(repo_url, notebook)})"


def bootstrap_cell(extras: str, pyproject: dict[str, Any] | None = None) -> str:
    """The bootstrap cell's source for a notebook that needs ``extras`` (e.g. ``"notebooks,training"``)."""
    pyproject = pyproject or read_pyproject()
    missing = [e for e in extras.split(",") if e not in pyproject["project"].get("optional-dependencies", {})]
    if missing:
        raise ValueError(f"A notebook needs the extra(s) {missing}, which pyproject.toml does not define.")
    return _ruff_formatted(_CELL_TEMPLATE.format(extras=extras, repo_url=repository_url(pyproject)))


def _ruff_formatted(code: str) -> str:
    """``code`` as ``ruff format`` writes it with the project's settings, so the generated cell survives the
    formatter (CI checks ``ruff format --check``); unchanged where ruff is not installed."""

    try:
        done = subprocess.run(
            [sys.executable, "-m", "ruff", "format", "--stdin-filename", "notebooks/cell.py", "-"],
            input=code,
            capture_output=True,
            text=True,
            cwd=PROJECT_ROOT,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return code
    return done.stdout


# --- rewriting the notebook scripts -------------------------------------------------------------------------

_CELL_MARKER = re.compile(r"^# %%.*$", re.MULTILINE)
_BADGE_LINE = re.compile(r"^# \[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)\n#\n", re.MULTILINE)


def _split_cells(script: str) -> list[str]:
    """A percent-format script cut into cells, each starting with its ``# %%`` line (text before the first kept)."""
    starts = [m.start() for m in _CELL_MARKER.finditer(script)]
    bounds = [0, *starts, len(script)] if starts and starts[0] != 0 else [*starts, len(script)]
    return [script[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def render_script(script: str, notebook: str, pyproject: dict[str, Any]) -> str:
    """``script`` (a notebook's percent-format ``.py``) with its badge and bootstrap cell as generated now.

    The badge goes on the line after the title (``# # ...``) of the first markdown cell; the bootstrap is the
    first code cell, inserted after the title cell if the notebook has none yet that starts like one.
    """
    cells = _split_cells(script)
    title_index = next(i for i, c in enumerate(cells) if c.startswith("# %% [markdown]"))
    title = _BADGE_LINE.sub("", cells[title_index])
    lines = title.split("\n")
    heading = next(i for i, line in enumerate(lines) if line.startswith("# # "))
    lines[heading + 1 : heading + 1] = ["#", f"# {badge_markdown(repository_url(pyproject), notebook)}"]
    cells[title_index] = "\n".join(lines)
    body = bootstrap_cell(NOTEBOOK_EXTRAS[notebook], pyproject)
    new_cell = f"# %%\n{body}\n"
    code_index = next((i for i, c in enumerate(cells) if c.startswith("# %%") and not c.startswith("# %% [")), None)
    if code_index is not None and cells[code_index].startswith("# %%\n# Set-up"):
        cells[code_index] = new_cell
    else:
        cells.insert(title_index + 1, new_cell)
    return "".join(cells)


def readme_badges(readme: str, pyproject: dict[str, Any]) -> str:
    """``readme`` with each notebook row of its table carrying the notebook's generated Colab badge."""
    url = repository_url(pyproject)

    pattern = re.compile(
        r"^\| \[`(\d\d_[a-z0-9_]+)`\]\(notebooks/\1\.ipynb\)(?: \[!\[Open In Colab\]\([^)]*\)\]\([^)]*\))? \|",
        re.MULTILINE,
    )
    return pattern.sub(lambda m: f"| [`{m[1]}`](notebooks/{m[1]}.ipynb) {badge_markdown(url, m[1])} |", readme)


def disagreements(
    notebook_dir: Path = NOTEBOOK_DIR, readme: Path = README, pyproject_path: Path = PYPROJECT
) -> list[str]:
    """Files whose bootstrap cell or badges differ from what pyproject.toml generates (empty when all agree)."""
    pyproject = read_pyproject(pyproject_path)
    problems = []
    scripts = sorted(notebook_dir.glob("[0-9][0-9]_*.py"))
    unknown = [p.stem for p in scripts if p.stem not in NOTEBOOK_EXTRAS]
    problems += [f"{stem}: not in nbhelpers.tutorials.bootstrap.NOTEBOOK_EXTRAS" for stem in unknown]
    for path in scripts:
        if path.stem in NOTEBOOK_EXTRAS:
            text = path.read_text(encoding="utf-8")
            if render_script(text, path.stem, pyproject) != text:
                problems.append(f"{path.name}: bootstrap cell or Colab badge differs from pyproject.toml")
    if readme.is_file():
        text = readme.read_text(encoding="utf-8")
        if readme_badges(text, pyproject) != text:
            problems.append(f"{readme.name}: a notebook's Colab badge differs from pyproject.toml")
    return problems


def write_all(notebook_dir: Path = NOTEBOOK_DIR, readme: Path = README, pyproject_path: Path = PYPROJECT) -> list[Path]:
    """Rewrite every notebook script's badge and bootstrap cell and the README's badges; sync the .ipynb pairs.

    Returns the files changed.
    """
    pyproject = read_pyproject(pyproject_path)
    changed = []
    for path in sorted(notebook_dir.glob("[0-9][0-9]_*.py")):
        text = path.read_text(encoding="utf-8")
        new = render_script(text, path.stem, pyproject)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    if changed:
        # Lazy: jupytext is in the [test] extra, needed only when a notebook changed.
        from jupytext.cli import jupytext

        jupytext(["--sync", *map(str, changed)])
    text = readme.read_text(encoding="utf-8")
    new = readme_badges(text, pyproject)
    if new != text:
        readme.write_text(new, encoding="utf-8")
        changed.append(readme)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nbhelpers.tutorials.bootstrap", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="only report files that disagree with pyproject.toml")
    args = parser.parse_args(argv)
    if args.check:
        problems = disagreements()
        print("\n".join(problems) or "All notebooks and the README agree with pyproject.toml.")
        return 1 if problems else 0
    changed = write_all()
    print("\n".join(f"rewrote {p.relative_to(PROJECT_ROOT)}" for p in changed) or "Nothing to change.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
