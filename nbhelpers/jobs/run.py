"""The row function and what every engine shares: keys, image names, what is left to do, the manifest.

A row's picture is decided by its prompt, its seed, its settings and the pipeline (:class:`JobSpec`): those go into
the row's key (:meth:`JobSpec.key_of`), and the key into the image's name (:meth:`JobSpec.image_name`), so

- the same row makes the same file, whichever engine runs it and in which process (one process, ``accelerate``
  processes, Ray actors): each row is generated alone, with a generator seeded from the row, never batched with
  others (a batch of two computes slightly different numbers than two batches of one);
- an edited row (prompt, seed or settings) gets a new file; a row edited back finds its first file again, so a
  picture is never reported under a prompt it was not made from.

:func:`run_row` makes one row's picture and returns its journal record; a row that fails (an empty prompt, a
setting the model refuses, out of memory) becomes a ``failed`` record with the reason and the others go on. A
picture that cannot be *written* (disk full, folder read-only) stops the job with :class:`OutputWriteError`: the
next rows would fail the same way.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from nbhelpers.atomic import atomic_open
from nbhelpers.checks import MAX_SEED, whole_number
from nbhelpers.errors import UserFacingError
from nbhelpers.jobs.journal import Journal
from nbhelpers.jobs.rows import Row

#: Columns of ``manifest.csv`` (``nbhelpers generate --prompts-file``): nothing that varies between runs of the same
#: rows (no timings), so one process, N processes and a cluster write the same bytes.
MANIFEST_COLUMNS = (
    "row",
    "line",
    "prompt",
    "seed",
    "status",
    "image",
    "width",
    "height",
    "settings",
    "nsfw_content_detected",
    "error",
)
MANIFEST_NAME = "manifest.csv"

#: A function measuring a finished picture (CLIP score, ...): its columns are added to the row's record.
Measure = Callable[[Any, Row], Mapping[str, Any]]


class OutputWriteError(UserFacingError, OSError):
    """The output folder cannot take a file (full disk, read-only); finished rows are kept and listed."""


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class JobSpec:
    """What every row of a job shares.

    Attributes:
        out: the output folder (images, journal, manifest).
        identity: what makes the pictures besides the rows (model, stand-in, scheduler, ...; see
            :meth:`nbhelpers.jobs.pipelines.PipelineRecipe.identity`).
        settings: generation settings of every row (a row's own settings win).
        seed: row ``i`` without a seed of its own uses ``seed + i`` (0 to :data:`~nbhelpers.checks.MAX_SEED`; a
            :class:`~nbhelpers.errors.ConfigurationError` otherwise).
        prefix: put in front of every image name (``evaluate`` names its grid cells so).
    """

    out: Path
    identity: Mapping[str, Any]
    settings: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    prefix: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))  # a folder given as a string works too
        # Checked here, before any model loads: a bad seed would otherwise fail every row, one by one.
        object.__setattr__(self, "seed", whole_number("seed", self.seed, 0, MAX_SEED))

    def seed_of(self, row: Row) -> int:
        return row.seed if row.seed is not None else self.seed + row.index

    def settings_of(self, row: Row) -> dict[str, Any]:
        return {**self.settings, **row.settings}

    def key_of(self, row: Row) -> str:
        """A hash of everything that decides the row's picture, its place (file, row) included."""
        return _digest(
            {
                "file": row.source,
                "row": row.index,
                "prompt": row.prompt,
                "seed": self.seed_of(row),
                "settings": self.settings_of(row),
                "pipeline": dict(self.identity),
            }
        )

    def image_name(self, row: Row, key: str | None = None) -> str:
        """``[<file stem>-<hash of the file name>-][prefix]<row>-<key>.png``.

        The file name's hash keeps ``a.csv`` and ``a.CSV`` apart on disks that ignore case.
        """
        key = key or self.key_of(row)
        place = ""
        if row.source:
            place = f"{Path(row.source).stem}-{hashlib.sha256(row.source.encode('utf-8')).hexdigest()[:8]}-"
        return f"{place}{self.prefix}{row.index:05d}-{key[:12]}.png"

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "identity": dict(self.identity),
            "settings": dict(self.settings),
            "seed": self.seed,
            "prefix": self.prefix,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobSpec:
        return cls(**data)


def _failure(error: BaseException) -> dict[str, Any]:
    return {"status": "failed", "image": None, "error": f"{type(error).__name__}: {error}"}


def run_row(pipe: Any, row: Row, job: JobSpec, *, measure: Measure | None = None) -> dict[str, Any]:
    """Generate and save the picture of ``row``; return its journal record.

    The record holds the row (``file``, ``row``, ``line``, ``prompt``), the ``seed`` and ``settings`` used, the
    ``image`` name, ``status`` (``ok`` or ``failed``) and ``error``, the picture's actual ``width`` and ``height``
    (what the pipeline made, whatever was asked), ``nsfw_content_detected``, ``seconds`` (the pipeline call) and
    whatever ``measure`` adds.

    Raises:
        OutputWriteError: the picture could not be written.
    """
    # Lazy: torch and diffusers; the job core stays light (Ray's driver, the batch runner).
    from nbhelpers.generation import generate

    key = job.key_of(row)
    settings = job.settings_of(row)
    record: dict[str, Any] = {
        "key": key,
        "file": row.source,
        "row": row.index,
        "line": row.line,
        "prompt": row.prompt,
        "seed": job.seed_of(row),
        "settings": settings,
        "image": job.image_name(row, key),
    }
    try:
        if not row.prompt.strip():
            raise ValueError("empty prompt")
        result = generate(pipe, row.prompt, seed=record["seed"], **settings)
        picture = result.images[0]
        measured = dict(measure(picture, row)) if measure is not None else {}
    except Exception as err:  # recorded per row: one bad row does not stop the others
        return record | _failure(err)
    try:
        result.save_one(0, job.out / record["image"])
    except OSError as err:
        raise OutputWriteError(
            f"Cannot write {job.out / record['image']}: {err.strerror or err}. Finished rows are kept; free space "
            "or fix the folder's permissions, then run again to resume."
        ) from err
    return record | {
        "status": "ok",
        "error": None,
        "width": picture.width,
        "height": picture.height,
        "nsfw_content_detected": result.nsfw[0],
        "seconds": round(result.seconds, 4),
        **measured,
    }


def is_finished(record: Mapping[str, Any] | None, folder: Path) -> bool:
    """Whether a journal record is a success whose picture is still on disk."""
    return (
        record is not None
        and record.get("status") == "ok"
        and bool(record.get("image"))
        and (folder / str(record["image"])).is_file()
    )


def pending(rows: Iterable[Row], job: JobSpec, records: Mapping[str, Mapping[str, Any]]) -> list[Row]:
    """The rows not finished yet (failed rows are tried again)."""
    return [row for row in rows if not is_finished(records.get(job.key_of(row)), job.out)]


def run_rows(
    pipe: Any,
    rows: Sequence[Row],
    job: JobSpec,
    journal: Journal,
    *,
    progress: bool = True,
    description: str = "rows",
    measure: Measure | None = None,
    bar: Any = None,
) -> list[dict[str, Any]]:
    """Run ``rows`` one by one with a progress bar, journalling each record as it finishes; return the records.

    Each journal record also says which ``worker`` made it (the journal's worker name, ``"main"`` alone).

    ``bar``: a tqdm bar to advance instead of a new one (a job made of several parts shows one bar).

    Raises:
        OutputWriteError: a picture or the journal could not be written (the rows before it are journalled).
    """

    records = []
    own_bar = bar is None
    if own_bar:
        bar = tqdm(total=len(rows), desc=description, disable=not progress, unit="image")
    for row in rows:
        record = run_row(pipe, row, job, measure=measure) | {"worker": journal.worker or "main"}
        try:
            journal.append(record)
        except OSError as err:
            raise OutputWriteError(
                f"Cannot write the journal {journal.own_path}: {err.strerror or err}. Free space or fix the "
                "folder's permissions, then run again to resume."
            ) from err
        records.append(record)
        bar.update(1)
    if own_bar:
        bar.close()
    return records


def records_in_order(
    rows: Iterable[Row], job: JobSpec, records: Mapping[str, Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The journal record of each row that has one (finished or failed), in the rows' order."""
    found = (records.get(job.key_of(row)) for row in rows)
    return [record for record in found if record is not None]


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def write_table(path: Path, records: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``records`` as a CSV with ``columns`` (nested values as JSON), atomically."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({column: _cell(record.get(column)) for column in columns} for record in records)
    return path


@dataclass
class JobReport:
    """What one run did: ``skipped`` rows were finished by an earlier run; ``failed_total`` counts every row whose
    latest try failed (this run's and earlier ones')."""

    total: int
    succeeded: int
    failed: int
    skipped: int
    failed_total: int
    manifest: Path | None

    def __str__(self) -> str:
        text = f"{self.succeeded} made, {self.skipped} already done, {self.failed} failed of {self.total} rows"
        return text + (f"; see {self.manifest}" if self.manifest else "")


def report(
    rows: Sequence[Row],
    todo: Sequence[Row],
    job: JobSpec,
    records: Mapping[str, Mapping[str, Any]],
    manifest: Path | None,
) -> JobReport:
    """Count what this run (which had ``todo`` left of ``rows``) did, from the journal's ``records``."""
    status = [records.get(job.key_of(row), {}).get("status") for row in todo]
    everything = [records.get(job.key_of(row), {}).get("status") for row in rows]
    return JobReport(
        total=len(rows),
        succeeded=status.count("ok"),
        failed=status.count("failed"),
        skipped=len(rows) - len(todo),
        failed_total=everything.count("failed"),
        manifest=manifest,
    )
