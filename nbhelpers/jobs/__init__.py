"""Resumable jobs over rows: one row function and one journal for every engine.

A job turns rows (prompt, optional seed and settings) into pictures plus a manifest. Whatever runs it, one process,
``accelerate``/``torchrun`` processes, Ray actors, the Azure ML batch scoring script, ``nbhelpers evaluate``'s
grid, the same pieces do the work:

- :mod:`~nbhelpers.jobs.rows`: prompts files (text, CSV, JSONL) into :class:`Row` objects, with one clear error per
  bad file naming its line;
- :mod:`~nbhelpers.jobs.run`: the row function :func:`run_row` and what decides a row's file: its key and image
  name come from its content and index (:class:`JobSpec`), so every engine writes the same bytes and an edited row
  is made again;
- :mod:`~nbhelpers.jobs.journal`: ``progress.jsonl``, one fsync'd line per finished row, a shard per worker;
- :mod:`~nbhelpers.jobs.pipelines`: the pipeline recipe each worker loads (:class:`PipelineRecipe`);
- :mod:`~nbhelpers.jobs.processes`: :func:`run_job`, this process or its share under ``accelerate launch``;
- :mod:`~nbhelpers.jobs.ray_engine`: :func:`~nbhelpers.jobs.ray_engine.run_with_ray`, Ray Data actors (the ``scale``
  extra).

Byte-identical pictures across engines need the same kind of device and the same number of torch threads per
worker (CPU kernels split sums differently over threads); ``docs/scale.md`` has the details.
"""

from nbhelpers.jobs.journal import Journal
from nbhelpers.jobs.pipelines import PipelineRecipe
from nbhelpers.jobs.processes import run_job
from nbhelpers.jobs.rows import Row, RowsFileError, read_rows
from nbhelpers.jobs.run import JobReport, JobSpec, OutputWriteError, run_row

__all__ = [
    "JobReport",
    "JobSpec",
    "Journal",
    "OutputWriteError",
    "PipelineRecipe",
    "Row",
    "RowsFileError",
    "read_rows",
    "run_job",
    "run_row",
]
