"""How a job's pipeline is made: a recipe every worker (process, Ray actor) follows to load the same pipeline.

A recipe is plain data (it travels to Ray actors as JSON), and its :meth:`PipelineRecipe.identity` goes into every
row's journal key: change the model, stand-in, scheduler or fast path and the rows are made again, under new
image names. :func:`pipeline_identity` is the part of an identity that a loaded pipeline knows of itself (model,
stand-in, fast path): a recipe's identity and a loaded pipeline's (:func:`identity_of`) both start from it, so a
job given ``model="./m"`` and one given the pipeline ``load_pipeline("./m")`` find each other's pictures.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nbhelpers.catalog import find_spec
from nbhelpers.stand_in import resolve_stand_in

#: The value of ``fast_path`` that means the plain pipeline.
PLAIN = "none"


def check_fast_path(fast_path: str, model: str | os.PathLike[str], stand_in: str | None) -> None:
    """Refuse a fast path before any work: an unknown name, a toy stand-in, a model whose UNet it does not fit.

    ``"none"`` (the plain pipeline) is always accepted.

    Raises:
        ConfigurationError: naming the problem (:class:`nbhelpers.perf.fast_paths.FastPathError`).
    """
    if fast_path == PLAIN:
        return
    # Lazy: torch and diffusers; the job core stays light (Ray's driver, the batch runner).
    from nbhelpers.perf.fast_paths import check_fast_path_for

    check_fast_path_for(fast_path, find_spec(str(model)), stand_in)


def model_name(model: str | os.PathLike[str]) -> str:
    """The catalog name of ``model`` (aliases resolved), a local folder's absolute path, or the hub id as given."""

    spec = find_spec(str(model))
    if spec is not None:
        return spec.name
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else str(model)


def pipeline_identity(
    model: str | os.PathLike[str], stand_in: str | None, fast_path: str | None = PLAIN
) -> dict[str, Any]:
    """What decides the pictures of the pipeline ``model`` loads (:func:`model_name`: a catalog name, a local folder's
    absolute path, or the hub id), with the stand-in and the fast path (named only when one is applied)."""
    identity: dict[str, Any] = {"model": model_name(model), "stand_in": stand_in}
    if fast_path not in (None, PLAIN):
        identity["fast_path"] = fast_path
    return identity


@dataclass(frozen=True)
class PipelineRecipe:
    """The :func:`nbhelpers.loading.load_pipeline` arguments of a job.

    Attributes:
        model: catalog name, hub id or local folder.
        stand_in: ``"toy"``, ``"tiny"`` or ``None`` (resolved when the recipe is made, so every worker agrees).
        scheduler: a scheduler name to swap in (``None``: the model's own).
        safety_checker: keep the NSFW safety checker.
        fast_path: ``"none"`` or a few-step fast path (``"lcm-lora"``, ...; see :mod:`nbhelpers.perf.fast_paths`).
        dtype: weight dtype (``None``: the loader's default for the device).
    """

    model: str
    stand_in: str | None = None
    scheduler: str | None = None
    safety_checker: bool = True
    fast_path: str = PLAIN
    dtype: str | None = None

    @classmethod
    def make(cls, model: str | os.PathLike[str], *, stand_in: str | None = None, **options: Any) -> PipelineRecipe:
        """A recipe with ``stand_in`` resolved now (``NBHELPERS_STAND_IN`` read here, not on each worker)."""

        return cls(model=str(model), stand_in=resolve_stand_in(stand_in), **options)

    def identity(self) -> dict[str, Any]:
        """What decides the pictures besides each row's prompt, seed and settings: :func:`pipeline_identity` and the
        loading options a loaded pipeline does not record."""
        return {
            **pipeline_identity(self.model, self.stand_in),
            "scheduler": self.scheduler or "default",
            "safety_checker": self.safety_checker,
            "fast_path": self.fast_path,  # named even when "none": the journals of earlier runs have it so
            "dtype": self.dtype,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def load(self, device: Any = None, *, progress: bool = False) -> Any:
        """Load the pipeline on ``device`` (default: the best available).

        Raises:
            ConfigurationError: the loader's errors (an unknown model, a fast path that does not fit it, ...).
        """
        # Lazy: torch and diffusers; the job core stays light (Ray's driver, the batch runner).
        from nbhelpers.loading import load_pipeline

        return load_pipeline(
            self.model,
            stand_in=self.stand_in or "none",
            device=device,
            dtype=self.dtype,
            safety_checker=self.safety_checker,
            scheduler=self.scheduler,
            fast_path=None if self.fast_path == PLAIN else self.fast_path,
            progress=progress,
        )


def identity_of(pipe: Any) -> dict[str, Any]:
    """The :func:`pipeline_identity` of an already loaded pipeline (from ``pipe.nbhelpers_info``; the class name
    for a pipeline :func:`~nbhelpers.loading.load_pipeline` did not load)."""
    # Lazy: torch and diffusers; the job core stays light (Ray's driver, the batch runner).
    from nbhelpers.loading import load_info

    info = load_info(pipe)
    if info is None:
        return {"model": type(pipe).__name__, "stand_in": None}
    return pipeline_identity(info.spec.name if info.spec else info.source, info.stand_in, info.fast_path)
