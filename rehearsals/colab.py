"""Colab rehearsal: each notebook alone, in a fresh runtime, installs what it needs and runs top to bottom.

    python -m rehearsals.colab                 # notebooks 01 and 03
    python -m rehearsals.colab 00 01 02 03     # any notebooks, by number or name

What it builds, in a temporary folder (``--workdir`` keeps it):

1. ``repo/``: a git clone of the working tree as it is now; ``NBHELPERS_REPO_URL=file://.../repo`` points the
   notebooks' first cell at it (as the ``[project.urls]`` URL does on Colab).
2. ``base/``: a virtual environment with only what a Colab runtime preinstalls that matters here: ipykernel (and
   nbclient to drive it), torch 2.13, numpy, pillow, matplotlib. Nothing of the project.
3. Per notebook: a copy of ``base/`` (a fresh runtime each, as Colab gives), and the ``.ipynb`` copied alone into
   an empty folder, executed by that environment's own kernel with ``HF_HUB_OFFLINE=1`` and
   ``NBHELPERS_STAND_IN=toy`` (the hub is not reachable; the packages come from PyPI), with ``STEPS = 4`` injected
   after the parameters cell as papermill would (``--set NAME=JSON`` for others). The first cell must pip-install
   nbhelpers from ``repo/`` and then the notebook's extras; every later cell must run.

It prints and saves (``--report``) the time of each phase and what the first cell printed, and exits non-zero if
any notebook fails. pip's own cache makes a second run (and CI, after the project's install) quicker; the base
environment is installed once and hard-linked into each notebook's runtime; pip does not byte-compile
(``PIP_NO_COMPILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rehearsals.common import (
    ROOT,
    Timer,
    clean_environment,
    dumps,
    notebook_path,
    snapshot_clone,
    write_report,
)

#: Steps the rehearsal asks for (denoising steps in 01, training steps in 03): the stand-in checks code paths.
FAST_STEPS = 4
#: What a Colab runtime already holds, among the packages that matter here (Colab ships them all preinstalled).
COLAB_PREINSTALLED = ["torch==2.13.0", "numpy", "pillow", "matplotlib", "ipykernel", "nbclient", "nbformat"]

_DRIVER = """
import sys, nbformat
from nbclient import NotebookClient
path, timeout = sys.argv[1], int(sys.argv[2])
notebook = nbformat.read(path, as_version=4)
client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": sys.argv[3]}})
try:
    client.execute()
finally:
    nbformat.write(notebook, path)
    first = next(c for c in notebook.cells if c.cell_type == "code")
    print("FIRST CELL OUTPUT:")
    for output in first.get("outputs", []):
        print(output.get("text", "") or output.get("evalue", ""), end="")
"""


def build_base_environment(folder: Path, timer: Timer) -> Path:
    """``folder`` as a virtual environment with the Colab-preinstalled packages; returns its python."""
    with timer.phase("base environment: venv + " + " ".join(COLAB_PREINSTALLED)):
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        python = folder / "bin" / "python"
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *COLAB_PREINSTALLED],
            check=True,
            env=clean_environment(PIP_NO_COMPILE="1"),
        )
    return python


def _parameterize(source: Path, target: Path, parameters: dict[str, object]) -> None:
    """Copy ``source`` to ``target`` with papermill's injected-parameters cell for the ``parameters`` the notebook
    declares (a learner would edit the parameters cell the same way)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from rehearsals.real_size import declared_parameters

    chosen = {k: v for k, v in parameters.items() if k in declared_parameters(source)}
    notebook = load_notebook_node(str(source))  # every cell gets the metadata papermill expects
    if chosen:
        notebook = parameterize_notebook(notebook, chosen, kernel_name="python3", language="python")
    nbformat.write(notebook, target)


def rehearse_notebook(
    name: str,
    base: Path,
    repo_url: str,
    workdir: Path,
    timer: Timer,
    timeout: int,
    parameters: dict[str, object] | None = None,
) -> dict:
    """Run one notebook alone in a copy of ``base``; return its result record."""
    source = notebook_path(name)
    runtime = workdir / f"runtime-{source.stem}"
    folder = workdir / f"colab-{source.stem}"
    folder.mkdir()
    with timer.phase(f"{source.stem}: fresh runtime (copy of the base environment)"):
        # Hard links: pip replaces files rather than writing into them, so the base stays as it was.
        shutil.copytree(base, runtime, symlinks=True, copy_function=os.link)
    _parameterize(source, folder / source.name, parameters)
    env = clean_environment(
        PATH=f"{runtime / 'bin'}:{clean_environment().get('PATH', '')}",
        NBHELPERS_REPO_URL=repo_url,
        HF_HUB_OFFLINE="1",
        NBHELPERS_STAND_IN="toy",
        NBHELPERS_CACHE=str(workdir / "nbhelpers-cache"),
        HF_HOME=str(workdir / "hf-home"),
        JUPYTER_DATA_DIR=str(workdir / f"jupyter-{source.stem}"),
        MPLBACKEND="Agg",
        TOKENIZERS_PARALLELISM="false",
        PIP_NO_COMPILE="1",  # byte-compiling every installed file is most of an install's time on 2 cores
    )
    with timer.phase(f"{source.stem}: first cell (clone + pip install) and every other cell"):
        result = subprocess.run(
            [str(runtime / "bin" / "python"), "-c", _DRIVER, str(folder / source.name), str(timeout), str(folder)],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
        )
    first_cell = result.stdout.partition("FIRST CELL OUTPUT:")[2].strip()
    print(first_cell, "\n")
    record = {
        "notebook": source.stem,
        "ok": result.returncode == 0,
        "first_cell_output": first_cell,
        "seconds": timer.seconds[f"{source.stem}: first cell (clone + pip install) and every other cell"],
    }
    if result.returncode != 0:
        record["error"] = result.stderr[-4000:]
        print(record["error"], file=sys.stderr)
    shutil.rmtree(runtime)  # about 1 GB each
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsals.colab", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", default=["01", "03"], help="numbers or names (default: 01 03)")
    parser.add_argument("--workdir", type=Path, help="keep everything here instead of a temporary folder")
    parser.add_argument("--report", type=Path, default=ROOT / "outputs" / "rehearsals" / "colab.json")
    parser.add_argument("--cell-timeout", type=int, default=900, help="seconds any one cell may take")
    parser.add_argument(
        "--set",
        action="append",
        default=[f"STEPS={FAST_STEPS}"],
        metavar="NAME=JSON",
        help=f"set a parameter the notebook declares (default: STEPS={FAST_STEPS}, few denoising or "
        "training steps, as the stand-in needs no more)",
    )
    args = parser.parse_args(argv)
    parameters = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.set)}

    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="colab-rehearsal-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        with timer.phase("clone of the working tree"):
            repo = snapshot_clone(workdir / "repo")
        base = build_base_environment(workdir / "base", timer).parent.parent
        records = [
            rehearse_notebook(n, base, f"file://{repo}", workdir, timer, args.cell_timeout, parameters)
            for n in args.notebooks
        ]
    report = {
        "notebooks": records,
        "seconds": timer.seconds,
        "preinstalled": COLAB_PREINSTALLED,
        "total_seconds": round(sum(timer.seconds.values()), 1),
    }
    print(f"Saved {write_report(report, args.report)}")
    failed = [r["notebook"] for r in records if not r["ok"]]
    print(dumps({"seconds": timer.seconds, "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
