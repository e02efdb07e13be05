"""How a job's pipeline is made: a recipe every worker (process, Ray actor) follows to load the same pipeline.

A recipe is plain data (it travels to Ray actors as JSON), and its :meth:`PipelineRecipe.identity` goes into every
row's journal key: change the model, stand-in, scheduler or fast path and the rows are made again, under new
image names.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nbhelpers.errors import ConfigurationError

#: The value of ``fast_path`` that means the plain pipeline.
PLAIN = "none"


def fast_path_supported() -> bool:
    """Whether :func:`nbhelpers.loading.load_pipeline` takes a ``fast_path=`` argument (few-step LoRAs and the like)."""
    from nbhelpers.loading import load_pipeline

    return "fast_path" in inspect.signature(load_pipeline).parameters


def check_fast_paths(names: list[str]) -> None:
    """Refuse fast paths this version cannot load (``"none"``, the plain pipeline, is always accepted).

    Raises:
        ConfigurationError: a name other than ``none`` while the loader has no ``fast_path`` argument.
    """
    wanted = [name for name in names if name != PLAIN]
    if wanted and not fast_path_supported():
        raise ConfigurationError(
            f"fast path(s) {', '.join(wanted)} are not available: this version's load_pipeline has no fast_path "
            f"argument yet. Use --fast-paths {PLAIN} (the plain pipeline)."
        )


def model_name(model: str | os.PathLike[str]) -> str:
    """The catalog name of ``model`` (aliases resolved), a local folder's absolute path, or the hub id as given."""
    from nbhelpers.catalog import find_spec

    spec = find_spec(str(model))
    if spec is not None:
        return spec.name
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else str(model)


@dataclass(frozen=True)
class PipelineRecipe:
    """The :func:`nbhelpers.loading.load_pipeline` arguments of a job.

    Attributes:
        model: catalog name, hub id or local folder.
        stand_in: ``"toy"``, ``"tiny"`` or ``None`` (resolved when the recipe is made, so every worker agrees).
        scheduler: a scheduler name to swap in (``None``: the model's own).
        safety_checker: keep the NSFW safety checker.
        fast_path: ``"none"`` or a fast path the loader takes (see :func:`check_fast_paths`).
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
        from nbhelpers.stand_in import resolve_stand_in

        return cls(model=str(model), stand_in=resolve_stand_in(stand_in), **options)

    def identity(self) -> dict[str, Any]:
        """What decides the pictures besides each row's prompt, seed and settings."""
        return {
            "model": model_name(self.model),
            "stand_in": self.stand_in,
            "scheduler": self.scheduler or "default",
            "safety_checker": self.safety_checker,
            "fast_path": self.fast_path,
            "dtype": self.dtype,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def load(self, device: Any = None, *, progress: bool = False) -> Any:
        """Load the pipeline on ``device`` (default: the best available).

        Raises:
            ConfigurationError: a fast path the loader cannot apply; the loader's own errors otherwise.
        """
        from nbhelpers.loading import load_pipeline

        extra: dict[str, Any] = {}
        if self.fast_path != PLAIN:
            check_fast_paths([self.fast_path])
            extra["fast_path"] = self.fast_path
        return load_pipeline(
            self.model,
            stand_in=self.stand_in or "none",
            device=device,
            dtype=self.dtype,
            safety_checker=self.safety_checker,
            scheduler=self.scheduler,
            progress=progress,
            **extra,
        )


def identity_of(pipe: Any) -> dict[str, Any]:
    """The identity of an already loaded pipeline (from ``pipe.nbhelpers_info``; the class name otherwise)."""
    from nbhelpers.loading import load_info

    info = load_info(pipe)
    if info is None:
        return {"model": type(pipe).__name__, "stand_in": None}
    return {"model": info.spec.name if info.spec else info.source, "stand_in": info.stand_in}
