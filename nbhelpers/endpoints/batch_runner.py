"""Batch scoring over a folder of CSV files with a ``prompt`` column, locally and resumably.

The same row function (:func:`score_row`) runs inside an Azure ML batch deployment
(``nbhelpers/endpoints/scoring/batch_score.py``). Locally, ``run_batch`` keeps a journal (``progress.jsonl``, one
fsync'd line per finished row) next to the images, so a run that is interrupted and started again skips
finished rows and loses none; rows that failed are recorded with their error and retried on the next run.
``predictions.csv`` (one line per input row, input order) is rewritten atomically at the end of every run.

A journal record is keyed by everything that decides the image (:func:`row_key`): file, row, prompt, seed and
generation parameters. Edit a prompt or change the parameters and that row is generated again; a finished row
is never reported under a prompt it was not made from. Image names carry a hash of the CSV's file name, so
``a.csv`` and ``a.CSV`` (one file on macOS and Windows, two on Linux) never write the same image. A journal line
torn by a crash is dropped and the journal rewritten before anything is appended to it.

CSV files may start with a UTF-8 byte-order mark (Excel's "CSV UTF-8"); a file that is not UTF-8, or whose
quotes do not balance, is refused with its name and line.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbhelpers.atomic import atomic_open
from nbhelpers.errors import ConfigurationError, UserFacingError

PREDICTION_COLUMNS = ["file", "row", "prompt", "status", "image", "nsfw_content_detected", "error"]
JOURNAL_NAME = "progress.jsonl"


class BatchInputError(ConfigurationError):
    """The input folder or a CSV file is not usable; the message says which file, which line and why."""


class BatchFailedError(UserFacingError, RuntimeError):
    """More rows failed than the error threshold allows (``predictions.csv`` is still written)."""


@dataclass
class BatchReport:
    """What one run did. ``skipped`` rows were already finished by an earlier run with the same prompt and settings."""

    total: int
    succeeded: int
    failed: int
    skipped: int
    predictions: Path


def input_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The CSV files of ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BatchInputError(f"Input folder {folder} does not exist.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
    if not files:
        raise BatchInputError(f"Input folder {folder} has no .csv files; each needs a 'prompt' column.")
    return files


def read_prompts(path: str | os.PathLike[str]) -> list[str]:
    """The ``prompt`` column of a CSV file, in order (empty cells are kept; they fail as rows).

    Raises:
        BatchInputError: naming the file (and line): not UTF-8, no ``prompt`` column, a quote never closed.
    """
    prompts: list[str] = []
    line = 1
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: a leading BOM is not part of a name
            reader = csv.DictReader(file, strict=True)
            if not reader.fieldnames or "prompt" not in [name.strip() for name in reader.fieldnames]:
                raise BatchInputError(f"{path}, line 1: no 'prompt' column (columns: {reader.fieldnames}).")
            column = next(name for name in reader.fieldnames if name.strip() == "prompt")
            line = reader.line_num + 1
            for row in reader:
                prompts.append(row.get(column) or "")
                line = reader.line_num + 1
    except UnicodeDecodeError as err:
        raise BatchInputError(
            f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as 'CSV UTF-8'."
        ) from None
    except csv.Error as err:
        hint = " (a quote opened there is never closed)" if "end of data" in str(err) else ""
        raise BatchInputError(f"{path}, line {line}: malformed CSV{hint}: {err}.") from None
    return prompts


def image_name(file_name: str, row: int) -> str:
    """The image file of ``row`` of CSV ``file_name``: its stem, a hash of the exact name, the row number."""
    digest = hashlib.sha256(file_name.encode("utf-8")).hexdigest()[:8]
    return f"{Path(file_name).stem}-{digest}-{row:05d}.png"


def row_key(file_name: str, row: int, prompt: str, seed: int, parameters: dict[str, Any]) -> str:
    """The journal key of a row: a hash of everything that decides its image."""
    identity = json.dumps([file_name, row, prompt, seed, parameters], sort_keys=True, default=str)
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()


def score_row(
    pipe: Any,
    file_name: str,
    row: int,
    prompt: str,
    *,
    output_folder: Path,
    seed: int = 0,
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate and save the image of one CSV row (seed ``seed + row``); return its prediction record.

    Used by :func:`run_batch` and by the batch scoring script, so both make the same image for the same row.
    A failure is recorded in the returned record (``status="failed"`` and the error), not raised.
    """
    from nbhelpers.generation import generate

    parameters = parameters or {}
    record: dict[str, Any] = {
        "file": file_name,
        "row": row,
        "prompt": prompt,
        "key": row_key(file_name, row, prompt, seed, parameters),
    }
    try:
        if not prompt.strip():
            raise ValueError("empty prompt")
        result = generate(pipe, prompt, seed=seed + row, **parameters)
        path = output_folder / image_name(file_name, row)
        result.save_one(0, path)
        record |= {"status": "ok", "image": path.name, "nsfw_content_detected": result.nsfw[0], "error": None}
    except Exception as err:  # recorded per row; the error threshold decides whether the job fails
        record |= {
            "status": "failed",
            "image": None,
            "nsfw_content_detected": None,
            "error": f"{type(err).__name__}: {err}",
        }
    return record


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """Finished records by key; a torn or corrupt line (a crash mid-write) is dropped and the journal rewritten."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    text = path.read_text(encoding="utf-8", errors="replace")
    torn = bool(text) and not text.endswith("\n")
    for line in text.splitlines():
        try:
            record = json.loads(line)
            records[record["key"]] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            torn = True
    if torn:  # otherwise the next record would be appended to the torn line and lost with it
        with atomic_open(path, "w", encoding="utf-8") as file:
            file.writelines(json.dumps(record) + "\n" for record in records.values())
    return records


def _append(journal: Any, record: dict[str, Any]) -> None:
    journal.write(json.dumps(record) + "\n")
    journal.flush()
    os.fsync(journal.fileno())


def _write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in PREDICTION_COLUMNS} for row in rows)


def run_batch(
    input_folder: str | os.PathLike[str],
    output_folder: str | os.PathLike[str],
    *,
    pipe: Any = None,
    model: str = "deci-v1",
    stand_in: str | None = None,
    parameters: dict[str, Any] | None = None,
    seed: int = 0,
    error_threshold: int = 0,
    progress: bool = True,
) -> BatchReport:
    """Generate an image for every row of every CSV in ``input_folder`` into ``output_folder``.

    Args:
        pipe: a loaded pipeline (default: ``load_pipeline(model, stand_in=stand_in)``).
        parameters: generation settings for every row (e.g. ``{"num_inference_steps": 30}``).
        seed: row ``i`` of a file uses ``seed + i``.
        error_threshold: failed rows tolerated; more raise :class:`BatchFailedError` (``-1``: never).

    Returns:
        A :class:`BatchReport`; ``predictions.csv`` in ``output_folder`` lists every row once.
    """
    from tqdm.auto import tqdm

    parameters = dict(parameters or {})
    files = input_files(input_folder)
    rows = [(f.name, i, prompt) for f in files for i, prompt in enumerate(read_prompts(f))]
    keys = [row_key(name, i, prompt, seed, parameters) for name, i, prompt in rows]
    output = Path(output_folder)
    output.mkdir(parents=True, exist_ok=True)
    journal_path = output / JOURNAL_NAME
    done = _read_journal(journal_path)
    todo = [
        (row, key)
        for row, key in zip(rows, keys, strict=True)
        if not (done.get(key, {}).get("status") == "ok" and (output / done[key]["image"]).exists())
    ]
    if todo and pipe is None:
        from nbhelpers.loading import load_pipeline

        pipe = load_pipeline(model, stand_in=stand_in, progress=False)
    succeeded = failed = 0
    with open(journal_path, "a", encoding="utf-8") as journal:
        for (name, row, prompt), key in tqdm(todo, desc="batch", disable=not progress):
            record = score_row(pipe, name, row, prompt, output_folder=output, seed=seed, parameters=parameters)
            succeeded += record["status"] == "ok"
            failed += record["status"] == "failed"
            _append(journal, record)
            done[key] = record
    predictions = output / "predictions.csv"
    _write_predictions(predictions, [done[key] for key in keys])
    report = BatchReport(
        total=len(rows), succeeded=succeeded, failed=failed, skipped=len(rows) - len(todo), predictions=predictions
    )
    failed_now = sum(done[key]["status"] == "failed" for key in keys)
    if 0 <= error_threshold < failed_now:
        raise BatchFailedError(
            f"{failed_now} row(s) failed, more than error_threshold={error_threshold}; "
            f"see the 'error' column of {predictions}. Re-run to retry them."
        )
    return report
