"""Batch endpoint scoring script for the Azure ML text-to-image contract.

Azure ML calls ``init()`` once per worker and ``run(mini_batch)`` with a list of CSV file paths (each with a
``prompt`` column); images go to ``AZUREML_BI_OUTPUT_PATH`` and the returned DataFrame (one row per prompt)
is appended to ``predictions.csv``. Each row is made by :func:`nbhelpers.jobs.run.run_row`, the row function of the
local ``run_batch`` (and of ``nbhelpers generate --prompts-file``), with the same job settings, so a row gets the
same seed (``row``, or the file's ``seed`` column), the same image name and the same image in both. Azure ML
itself spreads the files over ``instance_count`` x ``max_concurrency_per_instance`` workers and retries failed
mini-batches; it keeps no journal, so the script has none. Model selection: see :mod:`nbhelpers.endpoints.settings`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from nbhelpers.endpoints.batch_runner import PREDICTION_COLUMNS, batch_job, check_parameters, read_batch_rows
from nbhelpers.endpoints.scoring_service import model_source_from_environment
from nbhelpers.jobs.pipelines import identity_of
from nbhelpers.jobs.run import run_row

pipe = None
output_folder = Path("batch_outputs")
#: Generation settings for every row (empty: the model's published defaults), e.g. ``{"num_inference_steps": 30}``.
parameters: dict[str, Any] = {}


def init() -> None:
    """Load the model once per worker and find the output folder."""
    global pipe, output_folder
    # Lazy: torch and diffusers load in init(), once per worker, as Azure ML's entry-script contract has it.
    from nbhelpers.loading import load_pipeline

    check_parameters(parameters)  # a misspelt setting fails the deployment at start, not every row
    pipe = load_pipeline(model_source_from_environment(), progress=False)
    output_folder = Path(os.environ.get("AZUREML_BI_OUTPUT_PATH", "batch_outputs"))
    output_folder.mkdir(parents=True, exist_ok=True)


def run(mini_batch: list[str]) -> pd.DataFrame:
    """Generate one image per prompt of every CSV file in ``mini_batch``; one result row per prompt.

    A row that fails is returned with its error (the deployment's error_threshold decides the job's fate).
    """
    job = batch_job(output_folder, identity_of(pipe), check_parameters(parameters))
    records = [run_row(pipe, row, job) for path in mini_batch for row in read_batch_rows(path)]
    return pd.DataFrame(records, columns=PREDICTION_COLUMNS)
