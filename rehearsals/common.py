"""What both rehearsals share: a clone of the working tree, a clean environment, timings and a JSON report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
#: Environment variables of the maintainer's shell that would let a rehearsal see the checkout it must not see.
LEAKY_VARIABLES = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "CONDA_PREFIX", "JUPYTER_PATH", "IPYTHONDIR")


def notebook_path(name: str) -> Path:
    """``notebooks/<name>.ipynb`` from a full stem (``01_text_to_image``) or its number (``01``)."""
    matches = sorted(NOTEBOOK_DIR.glob(f"{name}*.ipynb"))
    if len(matches) != 1:
        known = ", ".join(p.stem for p in sorted(NOTEBOOK_DIR.glob("*.ipynb")))
        raise SystemExit(f"No single notebook matches {name!r}; known: {known}")
    return matches[0]


def snapshot_clone(target: Path) -> Path:
    """A git repository at ``target`` holding the working tree as it is now (committed or not), for file:// URLs.

    The bootstrap cell clones with ``--depth 1``, which needs a real repository: the checkout is cloned and the
    working tree's tracked and untracked (not ignored) files are copied over and committed.
    """
    subprocess.run(["git", "clone", "-q", "--no-local", str(ROOT), str(target)], check=True)
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    for relative in filter(None, listed):
        source = ROOT / relative
        if source.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    identity = {
        "GIT_AUTHOR_NAME": "rehearsal",
        "GIT_AUTHOR_EMAIL": "rehearsal@localhost",
        "GIT_COMMITTER_NAME": "rehearsal",
        "GIT_COMMITTER_EMAIL": "rehearsal@localhost",
    }
    subprocess.run(["git", "add", "-A"], cwd=target, check=True)
    subprocess.run(
        ["git", "commit", "-q", "--allow-empty", "-m", "working tree"],
        cwd=target,
        check=True,
        env={**os.environ, **identity},
    )
    return target


def clean_environment(**overrides: str) -> dict[str, str]:
    """``os.environ`` without the variables that point into the maintainer's own set-up, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_VARIABLES}
    env.update(overrides)
    return env


class Timer:
    """Named wall-clock phases, in seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 1)
            print(f"[{self.seconds[name]:7.1f} s] {name}", flush=True)


def write_report(report: dict, path: Path) -> Path:
    """Save ``report`` as JSON (creating folders)."""
    from nbhelpers.atomic import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, report)
    return path


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder``, each hard-linked file counted once (the disk space it takes)."""
    seen: dict[tuple[int, int], int] = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            seen[(stat.st_dev, stat.st_ino)] = stat.st_size
    return sum(seen.values())


def human(n: float) -> str:
    """Bytes as a short human-readable string (GB, MB, kB)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def dumps(report: dict) -> str:
    return json.dumps(report, indent=2, default=str)
