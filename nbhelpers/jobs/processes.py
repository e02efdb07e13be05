"""Run a job in this process, or in its share of ``accelerate launch`` / ``torchrun`` processes.

Alone, the process runs every unfinished row. Started by ``accelerate launch --num_processes N`` (or ``torchrun
--nproc_per_node N``), each process reads the journal, waits for the others (so all plan from the same journal),
takes its share of the unfinished rows with accelerate's ``PartialState.split_between_processes`` (the recipe of
diffusers' "Distributed inference" guide), loads the pipeline on its own device and journals into its own shard;
after a last barrier the main process folds the shards and writes the manifest, atomically.

On a machine without a GPU, ``accelerate launch --cpu --num_processes N`` starts *one* process (accelerate's
multi-CPU mode goes through MPI, ``--mpirun_hostfile``); ``torchrun --nproc_per_node N`` starts N. A run that sees
accelerate's CPU launch without a process group says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbhelpers.jobs.journal import Journal
from nbhelpers.jobs.pipelines import PipelineRecipe
from nbhelpers.jobs.rows import Row
from nbhelpers.jobs.run import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    JobReport,
    JobSpec,
    Measure,
    OutputWriteError,
    pending,
    records_in_order,
    report,
    run_rows,
    write_table,
)

logger = logging.getLogger(__name__)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def process_group(device: str | None = None) -> Any | None:
    """accelerate's ``PartialState`` when this process is one of several, else ``None``.

    ``PartialState`` needs ``cpu=True`` to form a CPU process group (gloo); it is passed when no GPU is used.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        if _flag("ACCELERATE_USE_CPU") and "MASTER_ADDR" in os.environ:
            logger.warning(
                "accelerate launch --cpu started one process (its multi-CPU mode needs MPI); for N processes on a "
                "CPU use: torchrun --nproc_per_node N -m nbhelpers ..."
            )
        return None
    # Lazy: accelerate and device import torch; the job core stays light (Ray's driver, the batch runner).
    from accelerate import PartialState

    from nbhelpers.device import pick_device  # (lazy, see above)

    return PartialState(cpu=_flag("ACCELERATE_USE_CPU") or pick_device(device).type == "cpu")


def finish(
    rows: Sequence[Row], job: JobSpec, manifest: str | None, columns: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], Path | None]:
    """Fold the journal's shards and write the manifest (``None``: none); return the journal's records and its path."""
    journal = Journal(job.out)
    journal.fold()
    records = journal.records()
    path = None
    if manifest is not None:
        path = write_table(job.out / manifest, records_in_order(rows, job, records), columns)
    return records, path


def finish_after_failure(
    rows: Sequence[Row], job: JobSpec, manifest: str | None, columns: Sequence[str]
) -> Path | None:
    """:func:`finish` after a run stopped (call it while handling the error); ``None`` when even that cannot be
    written, so the error that stopped the run is the one reported, not the full disk's that followed it."""
    with contextlib.suppress(OSError):
        return finish(rows, job, manifest, columns)[1]
    return None


def run_job(
    rows: Sequence[Row],
    job: JobSpec,
    recipe: PipelineRecipe | None = None,
    *,
    pipe: Any = None,
    device: str | None = None,
    progress: bool = True,
    measure: Measure | None = None,
    manifest: str | None = MANIFEST_NAME,
    columns: Sequence[str] = MANIFEST_COLUMNS,
) -> JobReport:
    """Make every unfinished row's picture into ``job.out``; write the manifest; return what this run did.

    Args:
        rows: the job's rows (:func:`nbhelpers.jobs.rows.read_rows`).
        recipe: how to load the pipeline (loaded only when rows are left; each process loads its own).
        pipe: an already loaded pipeline instead (one process only).
        device: the device (default: the process's device under accelerate, else the best available).
        measure: adds columns to each finished row's record (see :func:`nbhelpers.jobs.run.run_row`).
        manifest: the manifest's file name in ``job.out`` (``None``: none).

    Raises:
        OutputWriteError: the output folder stopped taking files (the manifest lists what finished).
    """
    if recipe is None and pipe is None:
        raise ValueError("Give a recipe or a loaded pipeline.")
    group = process_group(device) if pipe is None else None
    todo = pending(rows, job, Journal(job.out).records())
    if group is None:
        mine, worker, shows_progress = list(todo), None, progress
    else:
        group.wait_for_everyone()  # every process has read the journal before any writes to it
        with group.split_between_processes(list(todo)) as share:
            mine = list(share)
        worker, shows_progress = f"rank{group.process_index}", progress and group.is_main_process
        # accelerate names a CPU process's device "cpu:0"; a pipeline on "cpu:0" computes pictures that differ from
        # one on "cpu" by a level here and there (measured on the tiny stand-ins), so CPU processes use "cpu".
        device = "cpu" if group.device.type == "cpu" else str(group.device)
    try:
        if mine and pipe is None:
            assert recipe is not None
            pipe = recipe.load(device)
        with Journal(job.out, worker) as journal:
            description = "rows" if group is None else f"rows (process 1 of {group.num_processes})"
            done = run_rows(pipe, mine, job, journal, progress=shows_progress, description=description, measure=measure)
    except OutputWriteError as err:
        listed = finish_after_failure(rows, job, manifest, columns) if group is None else None
        if listed is None:
            raise
        raise OutputWriteError(f"{err} The rows finished so far are listed in {listed}.") from err.__cause__
    except BaseException:  # Ctrl-C: the manifest lists what finished
        if group is None:
            finish_after_failure(rows, job, manifest, columns)
        raise
    if group is not None:
        group.wait_for_everyone()
        if not group.is_main_process:  # its own rows only: the main process is folding the journal now
            return report(rows, mine, job, {record["key"]: record for record in done}, None)
    records, path = finish(rows, job, manifest, columns)
    return report(rows, todo, job, records, path)
