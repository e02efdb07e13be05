"""The notebooks' first cell (the bootstrap) and their "Open in Colab" badges, generated from pyproject.toml.

Nothing of the project is importable before a notebook's first cell has run (a fresh Colab runtime holds only
the notebook), so that cell cannot read the repository URL or the extras from the package: this module writes
them into the cell's text, the same text in every notebook apart from its ``EXTRAS`` line. The cell

- checks, in a separate Python process, that everything the notebook needs imports at a high enough version
  (importing in the kernel itself would pin old versions in memory before pip could upgrade them);
- when something is missing: finds the checkout the kernel runs in (the repository root or ``notebooks/``),
  or clones the repository (``[project.urls] Repository``, or ``NBHELPERS_REPO_URL``; a ``file://`` URL
  works), then runs ``pip install -e "<checkout>[<extras>]"``;
- prints what it found and did.

After changing ``[project.urls]``, the dependencies or a notebook's extras, run
``python -m nbhelpers.tutorials.bootstrap`` (it rewrites the notebooks' ``.py`` scripts and syncs their
``.ipynb``; ``--check`` only reports); ``tests/tutorials/test_bootstrap.py`` fails while a notebook or the README
disagrees with pyproject.toml.
"""

from __future__ import annotations

import argparse
import json
import re
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
    "02_sd15_vs_decidiffusion": "notebooks",
    "03_dreambooth": "notebooks,training",
    "04_endpoints": "notebooks,serving,azure",
    "05_daam_heat_maps": "notebooks",
}

#: Import names of distributions whose module is not the distribution name with ``-`` -> ``_``.
IMPORT_NAMES: dict[str, str] = {
    "pillow": "PIL",
    "huggingface-hub": "huggingface_hub",
    "ipython-autotime": "autotime",
    "azure-ai-ml": "azure.ai.ml",
    "azure-identity": "azure.identity",
    "azure-ai-contentsafety": "azure.ai.contentsafety",
    "scikit-image": "skimage",
    "pyyaml": "yaml",
}

#: The Colab badge image (Colab's own).
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"

_CELL_TEMPLATE = """\
# Set-up: installs what this notebook needs (Colab, Paperspace, a clone or a local Jupyter) and says what it did.
# Generated from pyproject.toml by `python -m nbhelpers.tutorials.bootstrap`: the same in every notebook but for EXTRAS.
EXTRAS = "{extras}"
NEEDS = {needs}
MODULES = {modules}


def set_up(extras):
    import importlib
    import os
    import re
    import subprocess
    import sys
    from importlib import metadata
    from pathlib import Path

    def number(version):
        return tuple(int(x) for x in re.findall(r"\\d+", version)[:3])

    def missing():  # import what the notebook needs; never import a version that pip must replace
        problems = []
        for requirement in [r for extra in ["", *extras.split(",")] for r in NEEDS[extra]]:
            dist, _, low = requirement.partition(">=")
            try:
                found = metadata.version(dist)
                if low and number(found) < number(low):
                    problems.append(f"{{dist}} {{found}} (needs >={{low}})")
                    continue
                importlib.import_module(MODULES.get(dist, dist.replace("-", "_")))
            except (ImportError, metadata.PackageNotFoundError) as err:
                problems.append(f"{{dist}} ({{type(err).__name__}})")
        try:
            importlib.import_module("nbhelpers")
        except ImportError:
            problems.append("nbhelpers")
        return problems

    repo_url = os.environ.get("NBHELPERS_REPO_URL") or "{repo_url}"
    here = Path.cwd().resolve()
    root = next((p for p in [here, *here.parents] if (p / "pyproject.toml").is_file() and (p / "nbhelpers").is_dir()),
                None)
    problems = missing()
    if problems:
        print("Missing or too old:", ", ".join(problems))
        if root is None:
            root = here / repo_url.rstrip("/").split("/")[-1].removesuffix(".git")
            if not (root / "pyproject.toml").is_file():
                print(f"Not inside a checkout of the project: cloning {{repo_url}} into {{root}}")
                subprocess.run(["git", "clone", "--depth", "1", repo_url, str(root)], check=True)
        before = {{(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}}
        print(f"Installing: pip install -e \\"{{root}}[{{extras}}]\\" (a few minutes on a fresh runtime)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f"{{root}}[{{extras}}]"], check=True)
        sys.path.insert(0, str(root))  # pip's editable install is seen by new processes; this kernel needs the path
        importlib.invalidate_caches()
        after = {{(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}}
        changed = [n for n, v in before.items()
                   if after.get(n) != v and MODULES.get(n, n.replace("-", "_")) in sys.modules]
        problems = missing()
        if problems or changed:
            raise RuntimeError(f"Restart the kernel (Colab: Runtime > Restart session), then run this cell again: "
                               f"still missing {{problems}}, upgraded after import {{changed}}.")
    print(f"Ready: nbhelpers and the [{{extras}}] extras import", f"(checkout {{root}})" if root else "(installed)")


set_up(EXTRAS)
"""


def read_pyproject(path: Path = PYPROJECT) -> dict[str, Any]:
    """The parsed ``pyproject.toml``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
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


def _requirement_probe(requirement: str) -> str:
    """``"pillow >= 10 ; python_version..."`` -> ``"pillow>=10"``: the distribution and the lowest version accepted."""
    match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(?:>=\s*([0-9][^,;\s]*))?", requirement)
    if match is None:
        raise ValueError(f"Cannot read the requirement {requirement!r} in pyproject.toml.")
    name = match[1].lower()
    return f"{name}>={match[2]}" if match[2] else name


def import_probes(pyproject: dict[str, Any]) -> dict[str, list[str]]:
    """``"distribution>=lowest"`` per extra (``""`` for the core dependencies), for the bootstrap cell's ``NEEDS``."""
    project = pyproject["project"]
    probes = {"": [_requirement_probe(r) for r in project["dependencies"]]}
    for extra in sorted({e for extras in NOTEBOOK_EXTRAS.values() for e in extras.split(",")}):
        try:
            requirements = project["optional-dependencies"][extra]
        except KeyError:
            raise ValueError(f"A notebook needs the extra [{extra}], which pyproject.toml does not define.") from None
        probes[extra] = [_requirement_probe(r) for r in requirements]
    return probes


def bootstrap_cell(extras: str, pyproject: dict[str, Any] | None = None) -> str:
    """The bootstrap cell's source for a notebook that needs ``extras`` (e.g. ``"notebooks,training"``)."""
    pyproject = pyproject or read_pyproject()
    probes = import_probes(pyproject)
    modules = {
        dist: module
        for dist, module in IMPORT_NAMES.items()
        if any(r.partition(">=")[0] == dist for needs in probes.values() for r in needs)
    }
    cell = _CELL_TEMPLATE.format(
        extras=extras, repo_url=repository_url(pyproject), needs=_format_needs(probes), modules=_format_needs(modules)
    )
    return _ruff_formatted(cell)


def _ruff_formatted(code: str) -> str:
    """``code`` as ``ruff format`` writes it with the project's settings, so the generated cell survives the
    formatter (CI checks ``ruff format --check``); unchanged where ruff is not installed."""
    import subprocess
    import sys

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


def _format_needs(mapping: dict[str, list[str]] | dict[str, str]) -> str:
    """A dict literal for the cell, one key per line, lists wrapped below the 120-column lint limit."""
    lines = ["{"]
    for extra, probes in mapping.items():
        if isinstance(probes, str):
            lines.append(f"    {json.dumps(extra)}: {json.dumps(probes)},")
            continue
        line = f"    {json.dumps(extra)}: ["
        for probe in probes:
            item = json.dumps(probe) + ", "
            if len(line) + len(item) > 116:
                lines.append(line.rstrip())
                line = "        "
            line += item
        lines.append(line.rstrip(", ") + "],")
    return "\n".join([*lines, "}"])


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
    if code_index is not None and cells[code_index].startswith("# %%\n# Set-up: "):
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
