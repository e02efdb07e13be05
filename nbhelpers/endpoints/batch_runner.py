"""Batch scoring over a folder of CSV files with a ``prompt`` column, locally and resumably.

The batch endpoint's contract on the job core of :mod:`nbhelpers.jobs`: the rows of every CSV file become pictures
through the one row function (:func:`nbhelpers.jobs.run.run_row`), which the Azure ML batch scoring script
(``nbhelpers/endpoints/scoring/batch_score.py``) calls too, so a row gets the same seed and the same image in both.
Locally, ``run_batch`` keeps the job's journal (``progress.jsonl``, one fsync'd line per finished row) next to the
images: a run that is interrupted and started again skips finished rows and loses none; rows that failed are
recorded with their error and retried on the next run. ``predictions.csv`` (one line per row with a result, input
order) is rewritten atomically at the end of every run, and when the output folder stops taking files.

A row's image name and journal key come from its file, row, prompt, seed, settings and model, so an edited prompt
or changed parameters make a new image, and a row edited back (A -> B -> A) is reported with the image made from A:
never a prompt over a picture it was not made from. Image names carry a hash of the CSV's file name, so ``a.csv``
and ``a.CSV`` (one file on macOS and Windows, two on Linux) never write the same image.

CSV files may start with a UTF-8 byte-order mark (Excel's "CSV UTF-8"). A file that is not UTF-8, has no ``prompt``
column or two of them, has a quote that never closes, or holds a bad ``seed`` or setting value is refused with its
name and line. Columns other than ``prompt``, ``seed`` and the settings (``num_inference_steps``, ...) are ignored
(ids, notes). An empty prompt fails as a row, as the endpoint's error threshold expects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbhelpers.errors import ConfigurationError, UserFacingError, ensure_writable_folder
from nbhelpers.jobs.journal import JOURNAL_NAME
from nbhelpers.jobs.pipelines import PipelineRecipe, identity_of, pipeline_identity
from nbhelpers.jobs.processes import run_job
from nbhelpers.jobs.rows import Row, RowsFileError, normalise_settings, read_rows
from nbhelpers.jobs.run import JobSpec

PREDICTION_COLUMNS = [
    "file",
    "row",
    "prompt",
    "seed",
    "status",
    "image",
    "width",
    "height",
    "nsfw_content_detected",
    "error",
]
PREDICTIONS_NAME = "predictions.csv"
__all__ = ["JOURNAL_NAME", "PREDICTION_COLUMNS", "BatchFailedError", "BatchInputError", "BatchReport", "run_batch"]

#: The input folder or a CSV file is not usable; the message says which file, which line and why.
BatchInputError = RowsFileError


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


def read_batch_rows(path: str | os.PathLike[str]) -> list[Row]:
    """The rows of one CSV file under the batch contract (unknown columns ignored, empty prompts kept as rows).

    Raises:
        BatchInputError: naming the file (and line).
    """
    return read_rows(path, strict=False, name_images_after_file=True)


def read_prompts(path: str | os.PathLike[str]) -> list[str]:
    """The ``prompt`` column of a CSV file, in order (empty cells are kept; they fail as rows)."""
    return [row.prompt for row in read_batch_rows(path)]


def check_parameters(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """The generation settings of every row, checked: a misspelt name is refused with the accepted ones.

    Raises:
        ConfigurationError: an unknown name, a wrong type or a value out of range.
    """
    try:
        return normalise_settings(dict(parameters or {}))
    except ConfigurationError as err:
        raise ConfigurationError(f"Batch parameters: {str(err).rstrip('.')}.") from None


def batch_job(output_folder: Path, identity: dict[str, Any], parameters: dict[str, Any], seed: int = 0) -> JobSpec:
    """The job of a batch run: row ``i`` of each file uses ``seed + i`` unless the file gives a ``seed`` column."""
    return JobSpec(out=output_folder, identity=identity, settings=parameters, seed=seed)


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
        pipe: a loaded pipeline (default: ``load_pipeline(model, stand_in=stand_in)``, loaded only when rows are
            left to do).
        parameters: generation settings for every row, e.g. ``{"num_inference_steps": 30}``; accepted names:
            ``num_inference_steps``, ``guidance_scale``, ``guidance_rescale``, ``negative_prompt``, ``height``,
            ``width`` (and ``steps``, ``guidance``). A CSV's own ``seed`` and setting columns win.
        seed: row ``i`` of a file uses ``seed + i``.
        error_threshold: failed rows tolerated; more raise :class:`BatchFailedError` (``-1``: never).

    Returns:
        A :class:`BatchReport`; ``predictions.csv`` in ``output_folder`` lists every row once.

    Raises:
        ConfigurationError: an unknown parameter, an unusable input file, an output folder that cannot be written.
        OutputWriteError: the output folder stopped taking files mid-run (``predictions.csv`` lists what finished).
    """
    settings = check_parameters(parameters)
    rows = [row for path in input_files(input_folder) for row in read_batch_rows(path)]
    output = ensure_writable_folder(output_folder, flag="output_folder")
    if pipe is not None:
        identity, recipe = identity_of(pipe), None
    else:
        recipe = PipelineRecipe.make(model, stand_in=stand_in)
        identity = pipeline_identity(model, recipe.stand_in)  # what identity_of(the pipeline it loads) says
    job = batch_job(output, identity, settings, seed)
    result = run_job(
        rows, job, recipe, pipe=pipe, progress=progress, manifest=PREDICTIONS_NAME, columns=PREDICTION_COLUMNS
    )
    predictions = output / PREDICTIONS_NAME
    if 0 <= error_threshold < result.failed_total:
        raise BatchFailedError(
            f"{result.failed_total} row(s) failed, more than error_threshold={error_threshold}; "
            f"see the 'error' column of {predictions}. Re-run to retry them."
        )
    return BatchReport(
        total=result.total,
        succeeded=result.succeeded,
        failed=result.failed,
        skipped=result.skipped,
        predictions=predictions,
    )
