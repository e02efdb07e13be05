"""The journal of a job: one JSON line per finished row, fsync'd, so a killed run loses nothing it finished.

A job's output folder holds ``progress.jsonl``. One process appends to it directly; when several workers run at
once (``accelerate``/``torchrun`` processes, Ray actors), each appends to its own shard,
``progress.<worker>.jsonl``, so no two writers share a file (appends from several processes to one file interleave
on network file systems). Readers merge the main file and every shard; at the end of a run the main process folds
the shards into ``progress.jsonl`` (atomically) and deletes them.

A record is a JSON object with a ``key`` (a hash of everything that decides the row's picture, see
:meth:`nbhelpers.jobs.run.JobSpec.key_of`) and a ``status`` (``"ok"`` or ``"failed"``). A row is finished when its key
has an ``ok`` record whose image is on disk; ``failed`` rows are run again. A line torn by a crash is skipped when
read, a writer starts its first record on a new line, and the next fold drops the torn line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from nbhelpers.atomic import atomic_open

JOURNAL_NAME = "progress.jsonl"
_WORKER_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class Journal:
    """The journal of the job writing to ``folder``.

    Args:
        folder: the job's output folder.
        worker: ``None`` for the only writer (appends to ``progress.jsonl``), else a name unique among the workers
            running at once (``rank0``, ``ray-host-1234``): it appends to ``progress.<worker>.jsonl``.
    """

    def __init__(self, folder: str | os.PathLike[str], worker: str | None = None) -> None:
        if worker is not None and not _WORKER_NAME.match(worker):
            raise ValueError(f"A journal worker name is letters, digits, '_', '.' and '-'; got {worker!r}.")
        self.folder = Path(folder)
        self.path = self.folder / JOURNAL_NAME
        self.worker = worker
        self._file: IO[str] | None = None

    @property
    def own_path(self) -> Path:
        """The file this writer appends to."""
        stem, suffix = JOURNAL_NAME.rsplit(".", 1)
        return self.path if self.worker is None else self.folder / f"{stem}.{self.worker}.{suffix}"

    def files(self) -> list[Path]:
        """The main file (if any) and every shard, in a fixed order."""
        stem, suffix = JOURNAL_NAME.rsplit(".", 1)
        shards = sorted(self.folder.glob(f"{stem}.*.{suffix}"))
        return ([self.path] if self.path.exists() else []) + shards

    def records(self) -> dict[str, dict[str, Any]]:
        """Every record by key, merged over the main file and the shards: a later record of a key replaces an
        earlier one, except that a failure never hides a success (two workers may have tried the same row)."""
        merged: dict[str, dict[str, Any]] = {}
        for path in self.files():
            for record in _read_lines(path):
                earlier = merged.get(record["key"])
                if earlier is None or record.get("status") == "ok" or earlier.get("status") != "ok":
                    merged[record["key"]] = record
        return merged

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` (it needs a ``key``) and flush it to disk before returning."""
        if "key" not in record:
            raise ValueError("A journal record needs a 'key'.")
        file = self._open()
        file.write(json.dumps(record, sort_keys=True) + "\n")
        file.flush()
        os.fsync(file.fileno())

    def _open(self) -> IO[str]:
        if self._file is None:
            path = self.own_path
            self.folder.mkdir(parents=True, exist_ok=True)
            torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open across appends, closed in close()
            if torn:  # a crash cut the last line: start ours on a new one so it is not glued to the torn one
                self._file.write("\n")
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def fold(self) -> None:
        """Write every record into ``progress.jsonl`` (atomically) and delete the shards and torn lines.

        Only while no worker is writing (the end of a run, after every worker has finished).
        """
        self.close()
        files = self.files()
        if not files:
            return
        records = self.records()
        with atomic_open(self.path, "w", encoding="utf-8") as file:
            file.writelines(json.dumps(record, sort_keys=True) + "\n" for record in records.values())
        for path in files:
            if path != self.path:
                path.unlink(missing_ok=True)  # a crash before this leaves a shard whose records are also above


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:  # folded away by another run meanwhile
        return
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn by a crash mid-write
        if isinstance(record, dict) and isinstance(record.get("key"), str):
            yield record
