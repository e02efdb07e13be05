"""Every notebook starts with the same short generated bootstrap cell and a Colab badge, both agreeing with
pyproject.toml; the cell's work is done by nbhelpers.tutorials.setup."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

import nbhelpers
from nbhelpers.tutorials import bootstrap, setup

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
    assert len([line for line in cell.splitlines() if line.strip()]) <= 8  # a learner can read past it
    reference = _first_code_cell(SCRIPTS[0])
    assert re.sub(r'^set_up\(".*"\)', "", cell, flags=re.M) == re.sub(r'^set_up\(".*"\)', "", reference, flags=re.M)
    title = jupytext.read(script).cells[0].source
    assert bootstrap.badge_markdown(bootstrap.repository_url(bootstrap.read_pyproject()), script.stem) in title
    # The badge opens this very notebook on Colab.
    assert f"/blob/main/notebooks/{script.stem}.ipynb" in title


def test_the_cell_names_the_repository_url_and_the_extras_of_pyproject():
    pyproject = bootstrap.read_pyproject()
    cell = bootstrap.bootstrap_cell("notebooks,training", pyproject)
    assert bootstrap.repository_url(pyproject) in cell and 'set_up("notebooks,training")' in cell
    with pytest.raises(ValueError, match="does not define"):
        bootstrap.bootstrap_cell("notebooks,no-such-extra", pyproject)


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


def _run_cell(cwd: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )


def test_setup_reads_the_requirements_of_the_extras_from_the_package():
    names = {r.name for r in setup.requirements("notebooks,training")}
    assert {"diffusers", "torch", "ipyplot", "peft"} <= names and "gunicorn" not in names
    assert "gunicorn" in {r.name for r in setup.requirements(["serving"])}
    assert not any(r.name == "diffusion-nbhelpers" for r in setup.requirements("dev"))


def test_setup_finds_what_is_missing_or_too_old_without_importing_it():
    from packaging.requirements import Requirement

    wanted = [Requirement("no-such-dist-xyz>=1"), Requirement("pytest>=999"), Requirement("pytest>=1")]
    found = setup.unmet(wanted)
    assert found["no-such-dist-xyz>=1"] is None and found["pytest>=999"] is not None and "pytest>=1" not in found


def test_setup_installs_what_is_missing_in_one_pip_call_and_asks_for_a_restart_if_it_still_misses(monkeypatch):
    from packaging.requirements import Requirement

    calls = []
    # A requirement of an extra carries its marker; pip must get it without (it would read the marker as false).
    missing = Requirement('no-such-dist-xyz>=1; extra == "notebooks"')
    monkeypatch.setattr(setup, "requirements", lambda extras: [missing])
    monkeypatch.setattr(setup.subprocess, "run", lambda command, check: calls.append(command))
    with pytest.raises(RuntimeError, match="Restart the kernel.*still missing"):
        setup.set_up("notebooks")
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", "no-such-dist-xyz>=1"]]


@pytest.mark.parametrize("extras", sorted(set(bootstrap.NOTEBOOK_EXTRAS.values())))
def test_cell_installs_nothing_when_everything_is_there(tmp_path: Path, extras: str):
    # The test environment has nbhelpers and every extra: an empty folder stays empty, whatever the notebook.
    result = _run_cell(tmp_path, bootstrap.bootstrap_cell(extras), NBHELPERS_REPO_URL=f"file://{tmp_path}/no-repo")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Ready: nbhelpers {nbhelpers.__version__}" in result.stdout and f"[{extras}] extras" in result.stdout
    assert "Missing" not in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_cell_installs_nbhelpers_from_the_override_url_when_it_does_not_import(tmp_path: Path):
    # nbhelpers hidden from find_spec, outside any checkout: the cell pip-installs NBHELPERS_REPO_URL (here a
    # repository that does not exist, so pip fails after saying what it tried; the real install runs in the Colab
    # rehearsal).
    hide = (
        "import importlib.util as u; find = u.find_spec\n"
        "u.find_spec = lambda name, *a: None if name == 'nbhelpers' else find(name, *a)\n"
    )
    result = _run_cell(
        tmp_path,
        hide + bootstrap.bootstrap_cell("notebooks"),
        NBHELPERS_REPO_URL=f"file://{tmp_path}/missing-repo",
        GIT_TERMINAL_PROMPT="0",
    )
    assert f"git+file://{tmp_path}/missing-repo" in result.stderr + result.stdout
    assert result.returncode != 0 and "CalledProcessError" in result.stderr
