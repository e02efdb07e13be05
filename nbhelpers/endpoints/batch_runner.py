"""Batch scoring over a folder of CSV files with a ``prompt`` column, locally and resumably.

The same row logic runs inside an Azure ML batch deployment (``nbhelpers/scoring/batch_score.py``). Locally,
``run_batch`` keeps a journal (``progress.jsonl``, one fsync'd line per finished row) next to the images, so a
run that is interrupted and started again skips finished rows and loses none; rows that failed are
recorded with their error and retried on the next run. ``predictions.csv`` (one line per input row, input
order) is rewritten atomically at the end of every run.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbhelpers.atomic import atomic_open
from nbhelpers.images import save_image

PREDICTION_COLUMNS = ["file", "row", "prompt", "status", "image", "nsfw_content_detected", "error"]


class BatchInputError(ValueError):
    """The input folder or a CSV file is not usable; the message says which and why."""


class BatchFailedError(RuntimeError):
    """More rows failed than the error threshold allows (``predictions.csv`` is still written)."""


@dataclass
class BatchReport:
    """What one run did. ``skipped`` rows were already finished by an earlier run."""

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
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".csv")
    if not files:
        raise BatchInputError(f"Input folder {folder} has no .csv files; each needs a 'prompt' column.")
    return files


def read_prompts(path: str | os.PathLike[str]) -> list[str]:
    """The ``prompt`` column of a CSV file, in order (empty cells are kept; they fail as rows)."""
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        if not reader.fieldnames or "prompt" not in reader.fieldnames:
            raise BatchInputError(f"{path} has no 'prompt' column (columns: {reader.fieldnames}).")
        return [(row.get("prompt") or "") for row in reader]


def generate_row(pipe: Any, prompt: str, *, seed: int, image_path: Path, parameters: dict[str, Any]) -> dict[str, Any]:
    """Generate one image for ``prompt``, save it (atomically, settings in its metadata) and describe it."""
    from nbhelpers.generation import generate

    if not prompt.strip():
        raise ValueError("empty prompt")
    result = generate(pipe, prompt, seed=seed, **parameters)
    save_image(result.images[0], image_path, prompt=prompt, seed=seed,
               steps=result.settings.get("num_inference_steps"), model=result.model)
    return {"image": image_path.name, "nsfw_content_detected": result.nsfw[0]}


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash: that row is simply done again
                continue
            records[f"{record['file']}:{record['row']}"] = record
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
    tiny: bool | None = None,
    parameters: dict[str, Any] | None = None,
    seed: int = 0,
    error_threshold: int = 0,
    progress: bool = True,
) -> BatchReport:
    """Generate an image for every row of every CSV in ``input_folder`` into ``output_folder``.

    Args:
        pipe: a loaded pipeline (default: ``load_pipeline(model, tiny=tiny)``).
        parameters: generation settings for every row (e.g. ``{"num_inference_steps": 30}``).
        seed: row ``i`` of a file uses ``seed + i``.
        error_threshold: failed rows tolerated; more raise :class:`BatchFailedError` (``-1``: never).

    Returns:
        A :class:`BatchReport`; ``predictions.csv`` in ``output_folder`` lists every row once.
    """
    from tqdm.auto import tqdm

    files = input_files(input_folder)
    rows = [(f, i, prompt) for f in files for i, prompt in enumerate(read_prompts(f))]
    output = Path(output_folder)
    output.mkdir(parents=True, exist_ok=True)
    journal_path = output / "progress.jsonl"
    done = _read_journal(journal_path)
    if pipe is None:
        from nbhelpers.loading import load_pipeline

        pipe = load_pipeline(model, tiny=tiny, progress=False)
    succeeded = failed = skipped = 0
    with open(journal_path, "a", encoding="utf-8") as journal:
        for file, row, prompt in tqdm(rows, desc="batch", disable=not progress):
            key = f"{file.name}:{row}"
            previous = done.get(key)
            if previous and previous["status"] == "ok" and (output / previous["image"]).exists():
                skipped += 1
                continue
            record: dict[str, Any] = {"file": file.name, "row": row, "prompt": prompt}
            try:
                image_path = output / f"{file.stem}-{row:05d}.png"
                record |= {"status": "ok", "error": None,
                           **generate_row(pipe, prompt, seed=seed + row, image_path=image_path,
                                          parameters=parameters or {})}
                succeeded += 1
            except Exception as err:  # recorded per row; the threshold decides whether the job fails
                record |= {"status": "failed", "image": None, "nsfw_content_detected": None,
                           "error": f"{type(err).__name__}: {err}"}
                failed += 1
            _append(journal, record)
            done[key] = record
    predictions = output / "predictions.csv"
    _write_predictions(predictions, [done[f"{f.name}:{i}"] for f, i, _ in rows if f"{f.name}:{i}" in done])
    report = BatchReport(total=len(rows), succeeded=succeeded, failed=failed, skipped=skipped, predictions=predictions)
    failed_now = sum(1 for f, i, _ in rows if done.get(f"{f.name}:{i}", {}).get("status") == "failed")
    if 0 <= error_threshold < failed_now:
        raise BatchFailedError(f"{failed_now} row(s) failed, more than error_threshold={error_threshold}; "
                               f"see the 'error' column of {predictions}. Re-run to retry them.")
    return report
