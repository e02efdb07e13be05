"""Atomic file writes: a result file is either the old one or the complete new one, never half written.

Every writer in ``nbhelpers`` that produces a file a user keeps (images, reports, logs, predictions) goes
through :func:`atomic_open`, so a run killed mid-write (Ctrl-C, a preempted Colab) loses no earlier work.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()  # what open() would give a new file; mkstemp alone gives 0o600


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; rename it onto ``path`` when the block ends cleanly.

    The parent folder is created if needed. If the block raises, the temporary file is removed and ``path`` is
    left as it was. The new file gets the usual permissions (``0o666`` less the umask).

    Args:
        path: the final file.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        **open_kwargs: passed to :func:`open` (``encoding``, ``newline``).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open() writes whole files; mode must be 'w' or 'wb', not {mode!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode, **open_kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp_name, _FILE_MODE)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON (non-JSON values via ``str``) atomically; return the path."""
    with atomic_open(path, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2, default=str)
    return Path(path)


@contextmanager
def atomic_folder(path: str | os.PathLike[str], *, keep_existing: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; when the block ends cleanly it takes ``path``'s place.

    For results made of several files (pipeline folders, training checkpoints): readers see the old folder or
    the complete new one, never a half-written one. If the block raises, the staging folder is removed and
    ``path`` is left as it was. An existing ``path`` is moved aside before the swap and deleted after it, so a
    crash between the two renames leaves a complete folder under one of the two names.

    With ``keep_existing=True`` (caches whose content is the same whoever builds it), a ``path`` that exists
    when the block ends wins: another process built it meanwhile and may already be reading it, so the staged
    copy is discarded instead of swapped in.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_current_umask())
        if keep_existing:
            try:
                os.rename(staging, path)  # refuses to replace a non-empty folder: the first builder wins
            except OSError:
                if not path.is_dir():
                    raise
            return
        previous = None
        if path.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{path.name}-", suffix=".old", dir=path.parent))
            os.replace(path, previous / path.name)
        os.replace(staging, path)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
