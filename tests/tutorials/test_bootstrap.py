"""Every notebook starts with the same generated bootstrap cell and a Colab badge, both agreeing with pyproject.toml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

from nbhelpers.tutorials import bootstrap

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def _first_code_cell(script: Path) -> str:
    notebook = jupytext.read(script)
    return next(c.source for c in notebook.cells if c.cell_type == "code")


def test_notebooks_and_readme_agree_with_pyproject():
    assert bootstrap.disagreements() == [], "run `python -m nbhelpers.tutorials.bootstrap` and commit the result"
    assert {p.stem for p in SCRIPTS} == set(bootstrap.NOTEBOOK_EXTRAS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_first_code_cell_is_the_bootstrap_and_identical_but_for_extras(script: Path):
    cell = _first_code_cell(script)
    extras = bootstrap.NOTEBOOK_EXTRAS[script.stem]
    assert cell == bootstrap.bootstrap_cell(extras).strip()
    reference = _first_code_cell(SCRIPTS[0])
    assert re.sub(r'^EXTRAS = ".*"$', "", cell, flags=re.M) == re.sub(r'^EXTRAS = ".*"$', "", reference, flags=re.M)
    title = jupytext.read(script).cells[0].source
    assert bootstrap.badge_markdown(bootstrap.repository_url(bootstrap.read_pyproject()), script.stem) in title
    # The badge opens this very notebook on Colab.
    assert f"/blob/main/notebooks/{script.stem}.ipynb" in title


def test_the_cell_names_the_repository_url_and_the_extras_of_pyproject():
    pyproject = bootstrap.read_pyproject()
    cell = bootstrap.bootstrap_cell("notebooks,training", pyproject)
    assert bootstrap.repository_url(pyproject) in cell
    assert '"peft>=0.12"' in cell and '"ipyplot>=1.1.2"' in cell and '"diffusers>=0.35"' in cell
    assert "find_spec" not in cell  # decided by importing, not by finding a source folder


def test_every_notebook_extra_exists_and_notebook_only_packages_left_the_core():
    project = bootstrap.read_pyproject()["project"]
    core = " ".join(project["dependencies"])
    assert "ipyplot" not in core and "autotime" not in core
    extras = project["optional-dependencies"]
    assert any(r.startswith("ipyplot") for r in extras["notebooks"])
    assert any(r.startswith("peft") for r in extras["training"])
    assert any(r.startswith("azureml-inference-server-http") for r in extras["serving"])
    assert any(r.startswith("requests") for r in extras["serving"])
    assert any(r.startswith("azure-ai-ml") for r in extras["azure"])


def test_check_fails_when_pyproject_changes_and_write_fixes_it(tmp_path: Path):
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("outputs", ".ipynb*"))
    paths = {
        "notebook_dir": tmp_path / "notebooks",
        "readme": tmp_path / "README.md",
        "pyproject_path": tmp_path / "pyproject.toml",
    }
    assert bootstrap.disagreements(**paths) == []
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    url = bootstrap.repository_url(bootstrap.read_pyproject())
    pyproject.write_text(text.replace(url, "https://github.com/someone-else/fork"), encoding="utf-8")
    problems = bootstrap.disagreements(**paths)
    assert len(problems) == len(SCRIPTS) + 1  # every notebook and the README
    bootstrap.write_all(**paths)
    assert bootstrap.disagreements(**paths) == []
    assert "https://github.com/someone-else/fork" in (tmp_path / "notebooks" / "01_text_to_image.py").read_text()
    assert (
        "colab.research.google.com/github/someone-else/fork/blob/main/notebooks/01_text_to_image.ipynb"
        in (tmp_path / "README.md").read_text()
    )


def test_colab_badges_need_a_github_url():
    with pytest.raises(ValueError, match="github.com"):
        bootstrap.colab_url("https://gitlab.com/a/b", "01_text_to_image")


def _run_cell(cwd: Path, extras: str = "notebooks", **env: str) -> subprocess.CompletedProcess[str]:
    code = bootstrap.bootstrap_cell(extras)
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )


def test_every_probed_distribution_is_imported_by_a_module_it_installs():
    # The cell imports each requirement by a module name; a wrong guess (``pyyaml`` is imported as ``yaml``) makes
    # the cell ask for a restart forever. The dev environment holds every extra, so each name can be checked.
    from importlib import metadata

    provided: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            provided.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    probes = {
        r.partition(">=")[0] for needs in bootstrap.import_probes(bootstrap.read_pyproject()).values() for r in needs
    }
    for dist in sorted(probes):
        module = bootstrap.IMPORT_NAMES.get(dist, dist.replace("-", "_"))
        assert module.split(".")[0] in provided[dist], f"{dist} installs {sorted(provided[dist])}, not {module}"


@pytest.mark.parametrize("extras", sorted(set(bootstrap.NOTEBOOK_EXTRAS.values())))
def test_cell_installs_nothing_and_clones_nothing_when_everything_imports(tmp_path: Path, extras: str):
    # The test environment has nbhelpers and every extra: an empty folder stays empty, whatever the notebook.
    result = _run_cell(tmp_path, extras, NBHELPERS_REPO_URL=f"file://{tmp_path}/no-such-repo")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Ready: nbhelpers and the [{extras}] extras import" in result.stdout
    assert "Installing" not in result.stdout and "Cloning" not in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_cell_clones_from_the_override_url_when_something_is_missing(tmp_path: Path):
    # A missing package outside any checkout: the cell clones NBHELPERS_REPO_URL (here a repository that does not
    # exist, so git fails after saying what it tried; the real install runs in the Colab rehearsal).
    code = bootstrap.bootstrap_cell("notebooks").replace('"notebooks": [', '"notebooks": ["no-such-dist-xyz", ', 1)
    env = {**os.environ, "NBHELPERS_REPO_URL": f"file://{tmp_path}/missing-repo", "GIT_TERMINAL_PROMPT": "0"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert "Missing or too old: no-such-dist-xyz (PackageNotFoundError)" in result.stdout
    assert f"cloning file://{tmp_path}/missing-repo into {tmp_path / 'missing-repo'}" in result.stdout
    assert result.returncode != 0 and "CalledProcessError" in result.stderr
