"""The fixed prompt sets shipped with the project, loaded by name.

- ``parti``: 48 PartiPrompts (4 per category, all 11 challenge types), columns ``category``, ``challenge``,
  ``note``, ``parti_line``; from https://github.com/google-research/parti (Apache-2.0), chosen by the rule in
  :mod:`nbhelpers.quality.parti_selection`. The set for real models.
- ``diffusers-eval``: the six prompts of diffusers' "Evaluating Diffusion Models" page, with its published CLIP
  scores (:attr:`PromptSet.published`) so a user with hub access can repeat that check.
- ``toy-shapes``: the 36 captions of the toy "shapes" models (columns ``colour``, ``shape``, ``background``),
  for offline runs.

Files, sources and licences: ``nbhelpers/quality/prompts/README.md``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources

from nbhelpers.errors import ConfigurationError
from nbhelpers.quality.backbones import DIFFUSERS_EVALUATION_BACKBONE
from nbhelpers.toy.shapes import Scene, all_captions

PARTI_SOURCE = "https://github.com/google-research/parti/blob/main/PartiPrompts.tsv"
DIFFUSERS_EVALUATION_PAGE = "https://huggingface.co/docs/diffusers/conceptual/evaluation"


@dataclass(frozen=True)
class PublishedCheck:
    """CLIP scores published for a prompt set, to compare a reproduction with.

    Attributes:
        backbone: the CLIP model the scores were computed with.
        scores: ``{catalog model name: mean CLIP score}``.
        settings: how the pictures were made.
        source: where the numbers are published.
    """

    backbone: str
    scores: Mapping[str, float]
    settings: str
    source: str


@dataclass(frozen=True)
class PromptSet:
    """A named list of prompts with per-prompt columns (category and the like).

    Attributes:
        name: the set's name for :func:`load_prompt_set`.
        description: one line on what it is for.
        source: where the prompts come from.
        licence: their licence.
        rows: one mapping per prompt: ``"prompt"`` plus the set's other :attr:`columns`.
        published: CLIP scores published for this set, if any.
    """

    name: str
    description: str
    source: str
    licence: str
    rows: tuple[Mapping[str, str], ...]
    published: PublishedCheck | None = field(default=None)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def prompts(self) -> list[str]:
        """The prompts, in order."""
        return [row["prompt"] for row in self.rows]

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names, ``"prompt"`` first."""
        return tuple(self.rows[0])

    def column(self, name: str) -> list[str]:
        """One column's values, in prompt order (e.g. ``column("category")``)."""
        if name not in self.columns:
            raise KeyError(f"Prompt set {self.name!r} has no column {name!r}; it has {', '.join(self.columns)}.")
        return [row[name] for row in self.rows]


#: diffusers' published CLIP scores for the ``diffusers-eval`` prompts.
DIFFUSERS_PUBLISHED_CHECK = PublishedCheck(
    backbone=DIFFUSERS_EVALUATION_BACKBONE,
    scores={"sd-v1-4": 34.9102, "sd-v1-5": 36.2137},
    settings=(
        "one picture per prompt at the pipelines' defaults (512 px, 50 steps, guidance 7.5), v1.4 in "
        "float16 on CUDA (v1.5's dtype is not stated), one generator torch.manual_seed(0) for the batch of "
        "six; the page passes the same generator object to the v1.5 run after the v1.4 run used it"
    ),
    source=DIFFUSERS_EVALUATION_PAGE,
)


def _shipped_csv_set(name: str, description: str, source: str, published: PublishedCheck | None = None) -> PromptSet:
    """A set stored as ``prompts/<name>.csv`` (both shipped files are under the Apache License 2.0)."""
    text = resources.files("nbhelpers.quality").joinpath("prompts").joinpath(f"{name}.csv").read_text(encoding="utf-8")
    rows = tuple(csv.DictReader(io.StringIO(text)))
    return PromptSet(name, description, source, "Apache-2.0", rows, published)


def _toy_shapes() -> PromptSet:
    rows = tuple(
        {"prompt": Scene(shape, colour, background).caption, "colour": colour, "shape": shape, "background": background}
        for colour, shape, background in all_captions()
    )
    return PromptSet(
        name="toy-shapes",
        description="the toy shapes models' 36 captions (offline runs)",
        source="nbhelpers.toy.shapes.all_captions",
        licence="Apache-2.0 (this project)",
        rows=rows,
    )


_SETS: dict[str, Callable[[], PromptSet]] = {
    "parti": lambda: _shipped_csv_set(
        "parti", "48 PartiPrompts, 4 per category, spanning all 11 challenge types", PARTI_SOURCE
    ),
    "diffusers-eval": lambda: _shipped_csv_set(
        "diffusers-eval",
        "the six prompts of diffusers' CLIP-score example",
        DIFFUSERS_EVALUATION_PAGE,
        DIFFUSERS_PUBLISHED_CHECK,
    ),
    "toy-shapes": _toy_shapes,
}


def prompt_set_names() -> list[str]:
    """The names :func:`load_prompt_set` accepts."""
    return list(_SETS)


def load_prompt_set(name: str) -> PromptSet:
    """The prompt set called ``name`` (see :func:`prompt_set_names`).

    Raises:
        ConfigurationError: for an unknown name, listing the known ones.
    """
    loader = _SETS.get(name.strip().lower())
    if loader is None:
        raise ConfigurationError(f"Unknown prompt set {name!r}; choose one of: {', '.join(_SETS)}.")
    return loader()
