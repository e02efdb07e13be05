"""A quality grid: (model, scheduler, steps, fast path) over prompts x seeds, every picture scored, resumable.

Each cell of the grid is a job of :mod:`nbhelpers.jobs` over the same rows (one per prompt and seed), all in one
output folder with one journal: the pictures (``<cell>_<row>-<key>.png``), ``scores.csv`` (one line per picture:
``model, scheduler, steps, fast_path, prompt, seed, clip_score, seconds_per_image``, then ``toy_accuracy`` with the
toy stand-in, ``status``, ``image``, ``error``) and ``summary.json`` (per setting: the mean and 95% bootstrap
interval of each score, :func:`nbhelpers.quality.summarise_by`; the CLIP backbone, the device, the library
versions). A killed run continues where it stopped: finished pictures, with their scores and timings, are not made
again. A picture is made by the row function of ``nbhelpers generate``, so the same model, steps and seed give the
same picture in both.

With a stand-in model the tiny random CLIP scores the pictures and every result says its numbers are meaningless;
with the toy stand-in the toy picture reader (:func:`nbhelpers.toy.evaluate.read_scene`) adds ``toy_accuracy``, the
share of the caption's three words (colour, shape, background) the picture shows, which does measure something.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from nbhelpers.atomic import write_json_atomic
from nbhelpers.catalog import find_spec
from nbhelpers.checks import MAX_SEED, whole_number
from nbhelpers.device import pick_device
from nbhelpers.environment import package_versions
from nbhelpers.errors import ConfigurationError, ensure_writable_folder
from nbhelpers.generation import MAX_STEPS
from nbhelpers.jobs.journal import Journal
from nbhelpers.jobs.pipelines import PLAIN, PipelineRecipe, check_fast_path
from nbhelpers.jobs.rows import Row, read_rows
from nbhelpers.jobs.run import JobSpec, pending, records_in_order, run_rows, write_table
from nbhelpers.perf.fast_paths import get_fast_path
from nbhelpers.quality.clip_score import ClipScorer
from nbhelpers.quality.prompt_sets import load_prompt_set
from nbhelpers.quality.statistics import Summary, summarise_by
from nbhelpers.stand_in import stand_in_mark
from nbhelpers.toy.evaluate import read_scene

#: The grid's columns, then the per-picture results, in ``scores.csv``.
SCORE_COLUMNS = (
    "model",
    "scheduler",
    "steps",
    "fast_path",
    "prompt",
    "seed",
    "clip_score",
    "seconds_per_image",
    "toy_accuracy",
    "status",
    "image",
    "error",
)
SETTING_COLUMNS = ("model", "scheduler", "steps", "fast_path")
SCORES_NAME, SUMMARY_NAME = "scores.csv", "summary.json"
#: Versions written into the summary.
VERSIONED = ("torch", "diffusers", "transformers", "torchmetrics", "accelerate", "diffusion-nbhelpers")
DEFAULT_SCHEDULER = "default"


@dataclass(frozen=True)
class GridSettings:
    """What ``nbhelpers evaluate`` compares.

    Attributes:
        out: the output folder.
        models: catalog names, hub ids or folders.
        steps: denoising steps to try (empty: each model's published default).
        schedulers: scheduler names (``"default"``: the model's own).
        fast_paths: few-step fast paths (``"lcm-lora"``, ...; ``"none"``: the plain pipeline), passed to
            :func:`nbhelpers.loading.load_pipeline`.
        prompt_set: a shipped prompt set (:func:`nbhelpers.quality.load_prompt_set`), or
        prompts_file: a prompts file (text, CSV or JSONL; a row with its own seed or settings is refused: the grid
            sets both).
        limit: use only the first ``limit`` prompts.
        seeds: one picture per prompt and seed.
        stand_in: ``"toy"``, ``"tiny"`` or ``None`` (resolved).
        clip_backbone: the CLIP that scores (default: the tiny stand-in with a stand-in model, else
            :data:`nbhelpers.quality.DEFAULT_BACKBONE`).
        device: where pictures are made and scored (default: the best available).
    """

    out: Path
    models: Sequence[str]
    steps: Sequence[int] = ()
    schedulers: Sequence[str] = (DEFAULT_SCHEDULER,)
    fast_paths: Sequence[str] = (PLAIN,)
    prompt_set: str | None = None
    prompts_file: Path | None = None
    limit: int | None = None
    seeds: Sequence[int] = (0,)
    stand_in: str | None = None
    clip_backbone: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class Cell:
    """One setting of the grid: a pipeline recipe and a number of steps."""

    recipe: PipelineRecipe
    scheduler: str
    steps: int

    def columns(self) -> dict[str, Any]:
        return {
            "model": self.recipe.model,
            "scheduler": self.scheduler,
            "steps": self.steps,
            "fast_path": self.recipe.fast_path,
        }

    def job(self, out: Path) -> JobSpec:
        label = "_".join(str(value) for value in self.columns().values())
        prefix = re.sub(r"[^A-Za-z0-9_.-]+", "-", label) + "_"
        return JobSpec(
            out=out, identity=self.recipe.identity(), settings={"num_inference_steps": self.steps}, prefix=prefix
        )


def _default_steps(model: str, fast_path: str) -> int:
    """The steps a model (or its fast path) is published with."""

    if fast_path != PLAIN:
        return int(get_fast_path(fast_path).num_inference_steps)
    spec = find_spec(model)
    if spec is None:
        raise ConfigurationError(f"{model!r} is not in the catalog, so it has no default steps: give --steps.")
    return int(spec.num_inference_steps)


def grid_cells(settings: GridSettings) -> list[Cell]:
    """Every (model, scheduler, fast path, steps) of the grid, in that nesting order.

    Raises:
        ConfigurationError: a fast path that does not fit a model (or the toy stand-in), an empty list, steps that
            are not a whole number from 1 to :data:`~nbhelpers.generation.MAX_STEPS`, a model without default steps.
    """
    for name, values in (("models", settings.models), ("schedulers", settings.schedulers)):
        if not values:
            raise ConfigurationError(f"Give at least one of --{name}.")
    checked_steps = [whole_number("--steps", steps, 1, MAX_STEPS) for steps in settings.steps]
    cells = []
    for model in settings.models:
        for scheduler in settings.schedulers:
            for fast_path in settings.fast_paths:
                check_fast_path(fast_path, model, settings.stand_in)  # before any picture: the whole grid can run
                recipe = PipelineRecipe.make(
                    model,
                    stand_in=settings.stand_in or "none",
                    scheduler=None if scheduler == DEFAULT_SCHEDULER else scheduler,
                    fast_path=fast_path,
                )
                for steps in checked_steps or [_default_steps(model, fast_path)]:
                    cells.append(Cell(recipe=recipe, scheduler=scheduler, steps=steps))
    return cells


def _file_prompts(path: Path) -> list[str]:
    """The prompts of a prompts file; a row's own seed or settings is refused, as the grid would not use it."""
    prompts = []
    for row in read_rows(path):
        if row.seed is not None or row.settings:
            own = ", ".join(["seed"] * (row.seed is not None) + sorted(row.settings))
            raise ConfigurationError(
                f"{path}, line {row.line}: the grid gives every prompt each of --seeds and each setting's steps, so a "
                f"row's own {own} would not be used; remove those columns (or use nbhelpers generate --prompts-file)."
            )
        prompts.append(row.prompt)
    return prompts


def grid_prompts(settings: GridSettings) -> tuple[list[str], str, dict[str, Mapping[str, str]]]:
    """The prompts, where they come from, and each toy caption's scene (for the toy reader).

    Raises:
        ConfigurationError: both or neither of a prompt set and a prompts file, a prompts file row with its own
            seed or settings, or a bad ``limit``.
    """

    if settings.prompt_set is not None and settings.prompts_file is not None:
        raise ConfigurationError("Give a prompt set (--prompt-set) or a prompts file (--prompts-file), not both.")
    if settings.prompt_set is None and settings.prompts_file is None:
        raise ConfigurationError("Give a prompt set (--prompt-set) or a prompts file (--prompts-file).")
    if settings.prompts_file is not None:
        prompts, source = _file_prompts(settings.prompts_file), str(settings.prompts_file)
    else:
        prompt_set = load_prompt_set(str(settings.prompt_set))
        prompts, source = prompt_set.prompts, f"prompt set {prompt_set.name} ({prompt_set.source})"
    if settings.limit is not None:
        prompts = prompts[: whole_number("--limit", settings.limit, 1)]
    scenes = {row["prompt"]: row for row in load_prompt_set("toy-shapes").rows}
    return prompts, source, scenes


def grid_rows(prompts: Sequence[str], seeds: Sequence[int]) -> list[Row]:
    """One row per prompt and seed (prompt-major), each with its seed.

    Raises:
        ConfigurationError: no seed, or one that is not a whole number from 0 to :data:`~nbhelpers.checks.MAX_SEED`.
    """
    if not seeds:
        raise ConfigurationError("Give at least one seed (--seeds).")
    checked = [whole_number("--seeds", seed, 0, MAX_SEED) for seed in seeds]
    pairs = [(prompt, seed) for prompt in prompts for seed in checked]
    return [Row(index=i, prompt=prompt, seed=seed) for i, (prompt, seed) in enumerate(pairs)]


def _scorer(settings: GridSettings) -> Any:
    if settings.clip_backbone is not None:
        return ClipScorer(settings.clip_backbone, stand_in="none", device=settings.device)
    return ClipScorer(stand_in=settings.stand_in or "none", device=settings.device)


def _measure(scorer: Any, scenes: Mapping[str, Mapping[str, str]], toy: bool) -> Any:
    """Per picture: its CLIP score and, with the toy stand-in, the share of its caption's words the reader sees."""

    def measure(picture: Any, row: Row) -> dict[str, Any]:
        scores: dict[str, Any] = {"clip_score": round(float(scorer.score([picture], [row.prompt]).scores[0]), 4)}
        scene = scenes.get(row.prompt)
        if toy and scene is not None:
            reading = read_scene(picture)
            seen = [reading.colour == scene["colour"], reading.shape == scene["shape"]]
            seen.append(reading.background == scene["background"])
            scores["toy_accuracy"] = round(sum(seen) / len(seen), 4)
        return scores

    return measure


def _summary_dict(summary: Summary) -> dict[str, Any]:
    def number(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 4)

    return {
        "mean": number(summary.mean),
        "low": number(summary.low),
        "high": number(summary.high),
        "n": summary.n,
        "confidence": summary.confidence,
    }


def summarise_grid(rows: Sequence[Mapping[str, Any]], cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Per setting: counts, and the mean and 95% bootstrap interval of every score column present."""
    finished = [row for row in rows if row.get("status") == "ok"]

    def setting(row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row[column] for column in SETTING_COLUMNS)

    by_value = {}
    for value in ("clip_score", "seconds_per_image", "toy_accuracy"):
        present = [row for row in finished if row.get(value) is not None]
        by_value[value] = summarise_by(present, setting, value=value) if present else {}
    summaries = []
    for cell in cells:
        key = tuple(cell.columns()[column] for column in SETTING_COLUMNS)
        entry: dict[str, Any] = dict(cell.columns())
        entry["pictures"] = sum(setting(row) == key for row in finished)
        entry["failed"] = sum(setting(row) == key and row.get("status") == "failed" for row in rows)
        for value, found in by_value.items():
            if key in found:
                entry[value] = _summary_dict(found[key])
        summaries.append(entry)
    return summaries


def _versions() -> dict[str, str | None]:
    return package_versions(VERSIONED)


@dataclass
class GridReport:
    """What a grid run did and where its results are."""

    made: int
    skipped: int
    failed: int
    scores: Path
    summary: Path
    label: str
    clip_meaningless: bool
    settings: list[dict[str, Any]]


def run_grid(settings: GridSettings, *, progress: bool = True) -> GridReport:
    """Make and score every picture of the grid into ``settings.out``; write ``scores.csv`` and ``summary.json``.

    Raises:
        ConfigurationError: a bad setting (before any work).
        OutputWriteError: the output folder stopped taking files (a second run resumes).
    """

    cells = grid_cells(settings)
    prompts, source, scenes = grid_prompts(settings)
    rows = grid_rows(prompts, settings.seeds)
    out = ensure_writable_folder(settings.out)
    device = str(pick_device(settings.device))
    journal_records = Journal(out).records()
    todo = {cell: pending(rows, cell.job(out), journal_records) for cell in cells}
    total = sum(len(left) for left in todo.values())
    scorer = _scorer(settings)
    measure = _measure(scorer, scenes, toy=settings.stand_in == "toy")
    with Journal(out) as journal, tqdm(total=total, desc="evaluate", disable=not progress, unit="image") as bar:
        pipe, loaded = None, None
        for cell in cells:
            if not todo[cell]:
                continue
            if loaded != cell.recipe:  # cells of one recipe follow each other: one load per pipeline
                pipe = None  # the previous pipeline's memory is freed before the next one loads
                pipe, loaded = cell.recipe.load(device), cell.recipe
            bar.set_postfix_str(" ".join(str(v) for v in cell.columns().values()))
            run_rows(pipe, todo[cell], cell.job(out), journal, measure=measure, bar=bar)
    journal.fold()
    records = Journal(out).records()
    table = []
    for cell in cells:
        for record in records_in_order(rows, cell.job(out), records):
            table.append({**record, **cell.columns(), "seconds_per_image": record.get("seconds")})
    scores = write_table(out / SCORES_NAME, table, SCORE_COLUMNS)
    mark = stand_in_mark(settings.stand_in)
    label = scorer.backbone.name + (f" ({scorer.backbone.mark}: meaningless)" if scorer.backbone.mark else "")
    summaries = summarise_grid(table, cells)
    summary = write_json_atomic(
        out / SUMMARY_NAME,
        {
            "stand_in": settings.stand_in,
            "made_by": mark or "the named models",
            "clip_backbone": scorer.backbone.name,
            "clip_label": label,
            "clip_meaningless": scorer.backbone.stand_in is not None,
            "toy_accuracy": "share of the caption's colour, shape and background the toy reader sees"
            if settings.stand_in == "toy"
            else None,
            "device": device,
            "versions": _versions(),
            "prompts": {"source": source, "count": len(prompts)},
            "seeds": list(settings.seeds),
            "interval": "95% bootstrap (BCa, scipy.stats.bootstrap, seed 0); pictures treated as independent",
            "settings": summaries,
        },
    )
    statuses = [records.get(cell.job(out).key_of(row), {}).get("status") for cell in cells for row in todo[cell]]
    return GridReport(
        made=statuses.count("ok"),
        skipped=len(rows) * len(cells) - total,
        failed=sum(record.get("status") == "failed" for record in table),
        scores=scores,
        summary=summary,
        label=label,
        clip_meaningless=scorer.backbone.stand_in is not None,
        settings=summaries,
    )
