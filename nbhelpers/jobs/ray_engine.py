"""Run a job on a Ray cluster (or Ray on one machine) with Ray Data: one pipeline per actor, the same files.

The recipe of Ray's "Stable Diffusion Batch Prediction with Ray Data" example: the unfinished rows become a Ray
Dataset, ``map_batches`` maps a callable class over it, and each actor loads the pipeline once in its constructor
(``num_gpus=1`` gives each actor a GPU of its own; ``compute=ActorPoolStrategy(size=N)`` makes N actors, what the
example's ``concurrency=N`` did before Ray 2.51 deprecated it). Each actor runs
:func:`nbhelpers.jobs.run.run_row` on its rows, one at a time, writes the pictures into the job's output folder and
journals into a shard of its own; the driver (this process) counts the results for the progress bar, then folds
the journal and writes the manifest. So the files are the ones one process would write, and a run that is stopped
(driver or actors) resumes from the journal.

On a cluster the output folder must be one file system every node sees (NFS, a mounted bucket) at the same path.
Needs the ``scale`` extra (``pip install 'diffusion-nbhelpers[scale]'``, Ray Data). See ``docs/scale.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Iterator, Sequence
from typing import Any

from tqdm.auto import tqdm

from nbhelpers.errors import ConfigurationError, UserFacingError
from nbhelpers.jobs.journal import Journal
from nbhelpers.jobs.pipelines import PipelineRecipe
from nbhelpers.jobs.processes import finish, finish_after_failure
from nbhelpers.jobs.rows import Row
from nbhelpers.jobs.run import MANIFEST_COLUMNS, MANIFEST_NAME, JobReport, JobSpec, pending, report, run_rows


def _ray() -> Any:
    try:
        # Lazy: Ray is the optional [scale] extra.
        import ray
        import ray.data  # noqa: F401 - Ray Data is what the extra adds
    except ImportError as err:
        raise ConfigurationError(
            "Running a job on Ray needs Ray Data: pip install 'diffusion-nbhelpers[scale]' (or 'ray[data]')."
        ) from err
    return ray


@contextlib.contextmanager
def _quiet_ray_data(ray: Any) -> Iterator[None]:
    """Ray Data's own progress output off while ours runs (outside a terminal it logs a status block every ten
    seconds); restored afterwards."""
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.print_on_execution_start
    context.enable_progress_bars, context.print_on_execution_start = False, False
    try:
        yield
    finally:
        context.enable_progress_bars, context.print_on_execution_start = saved


class RowActor:
    """A Ray Data actor: loads the pipeline once, then makes the pictures of the rows it is given."""

    def __init__(self, recipe: dict[str, Any], job: dict[str, Any], device: str | None) -> None:
        self.job = JobSpec.from_json(job)
        self.pipe = PipelineRecipe(**recipe).load(device)
        worker = re.sub(r"[^A-Za-z0-9_.-]", "_", f"ray-{socket.gethostname()}-{os.getpid()}")
        self.journal = Journal(self.job.out, worker=worker)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        rows = [Row.from_json(json.loads(str(text))) for text in batch["row"]]
        records = run_rows(self.pipe, rows, self.job, self.journal, progress=False)
        return {"key": [r["key"] for r in records], "status": [r["status"] for r in records]}


def run_with_ray(
    rows: Sequence[Row],
    job: JobSpec,
    recipe: PipelineRecipe,
    *,
    concurrency: int = 1,
    num_gpus: float = 0,
    batch_size: int = 1,
    progress: bool = True,
    manifest: str | None = MANIFEST_NAME,
    columns: Sequence[str] = MANIFEST_COLUMNS,
) -> JobReport:
    """Make every unfinished row's picture into ``job.out`` with ``concurrency`` Ray actors; write the manifest.

    Uses the Ray cluster this process is connected to (``ray.init(...)`` first; without it Ray Data starts a
    local one with every CPU).

    Args:
        concurrency: the number of actors, each with a pipeline of its own.
        num_gpus: GPUs per actor (``1`` on a GPU cluster; ``0``: CPU actors, one CPU each).
        batch_size: rows handed to an actor at a time (it still makes them one by one; larger batches mean fewer
            hand-overs and coarser progress).

    Raises:
        ConfigurationError: Ray Data is not installed, or a bad argument.
        OutputWriteError: the output folder stopped taking files (the manifest lists what finished).
    """
    ray = _ray()
    if concurrency < 1 or batch_size < 1:
        raise ConfigurationError(f"concurrency and batch_size must be at least 1; got {concurrency}, {batch_size}.")

    todo = pending(rows, job, Journal(job.out).records())
    job.out.mkdir(parents=True, exist_ok=True)
    if todo:
        resources: dict[str, Any] = {"num_gpus": num_gpus} if num_gpus else {"num_cpus": 1}
        try:
            with (
                _quiet_ray_data(ray),  # before the dataset is made: a dataset keeps the context it was made in
                tqdm(total=len(todo), desc=f"rows ({concurrency} Ray actors)", disable=not progress) as bar,
            ):
                dataset = ray.data.from_items([{"row": json.dumps(row.to_json())} for row in todo])
                mapped = dataset.map_batches(
                    RowActor,
                    fn_constructor_kwargs={
                        "recipe": recipe.to_json(),
                        "job": job.to_json(),
                        "device": None if num_gpus else "cpu",
                    },
                    batch_size=batch_size,
                    compute=ray.data.ActorPoolStrategy(size=concurrency),  # `concurrency=` is deprecated since 2.51
                    **resources,
                )
                for batch in mapped.iter_batches(batch_size=None):
                    bar.update(len(batch["key"]))
        except Exception as err:
            finish_after_failure(rows, job, manifest, columns)  # list what finished before reporting the failure
            cause = getattr(err, "cause", None)
            if isinstance(cause, UserFacingError):  # an actor's one-line error, without Ray's wrapping
                raise cause from None
            raise
    records, path = finish(rows, job, manifest, columns)
    return report(rows, todo, job, records, path)
