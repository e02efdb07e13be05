"""Batch endpoint scoring script for the Azure ML text-to-image contract.

Azure ML calls ``init()`` once per worker and ``run(mini_batch)`` with a list of CSV file paths (each with a
``prompt`` column); images go to ``AZUREML_BI_OUTPUT_PATH`` and the returned DataFrame (one row per prompt)
is appended to ``predictions.csv``. Each row is made by :func:`nbhelpers.endpoints.batch_runner.score_row`, the
function the local ``run_batch`` uses, so a row gets the same seed (``row``) and the same image in both.
Model selection: see :mod:`nbhelpers.endpoints.settings`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from nbhelpers.endpoints.batch_runner import PREDICTION_COLUMNS, read_prompts, score_row

pipe = None
output_folder = Path("batch_outputs")
#: Generation settings for every row (empty: the model's published defaults), e.g. ``{"num_inference_steps": 30}``.
parameters: dict = {}


def init() -> None:
    """Load the model once per worker and find the output folder."""
    global pipe, output_folder
    from nbhelpers.endpoints.scoring_service import model_source_from_environment
    from nbhelpers.loading import load_pipeline

    pipe = load_pipeline(model_source_from_environment(), progress=False)
    output_folder = Path(os.environ.get("AZUREML_BI_OUTPUT_PATH", "batch_outputs"))
    output_folder.mkdir(parents=True, exist_ok=True)


def run(mini_batch: list[str]) -> pd.DataFrame:
    """Generate one image per prompt of every CSV file in ``mini_batch``; one result row per prompt.

    A row that fails is returned with its error (the deployment's error_threshold decides the job's fate).
    """
    records = [
        score_row(pipe, path.name, row, prompt, output_folder=output_folder, parameters=parameters)
        for path in map(Path, mini_batch)
        for row, prompt in enumerate(read_prompts(path))
    ]
    return pd.DataFrame(records, columns=PREDICTION_COLUMNS)
