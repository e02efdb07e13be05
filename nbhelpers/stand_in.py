"""The offline stand-ins for the real models, as one idea: ``stand_in`` is ``"toy"``, ``"tiny"`` or ``None``.

- ``"toy"``: a small model trained on 64 px pictures of coloured shapes, shipped in the package
  (``nbhelpers/toy/models``), in the real model's pipeline layout and code path. Its pictures follow simple
  prompts ("a red circle on a white background"), so lessons about what a model *does* can be shown offline.
- ``"tiny"``: the real model's exact folder layout and classes with tiny random weights, built on first use
  (``$NBHELPERS_CACHE/tiny``). For code paths, layouts and speed, never for what a picture shows.
- ``None``: the real model from the Hugging Face hub (or a local folder).

Every function that loads or makes a stand-in takes ``stand_in=`` and resolves it with :func:`resolve_stand_in`:
an explicit argument wins, else the ``NBHELPERS_STAND_IN`` environment variable. The loader
(:func:`nbhelpers.loading.load_pipeline`) finds a stand-in's files and records the value on the pipeline
(``pipe.nbhelpers_info.stand_in``), so nothing else needs to know where they live. On the command line every
command that loads a model takes ``--stand-in {toy,tiny}``, with ``--toy`` and ``--tiny`` as short forms.
Kept free of heavy imports: the endpoint gateway (no torch) uses it too.
"""

from __future__ import annotations

import os
from typing import Literal, get_args

from nbhelpers.errors import ConfigurationError

StandIn = Literal["toy", "tiny"]
#: The stand-ins, in the order the command line lists them.
STAND_INS: tuple[StandIn, ...] = get_args(StandIn)
#: The environment variable that picks a stand-in when no argument does (``toy``, ``tiny``, or empty).
STAND_IN_VARIABLE = "NBHELPERS_STAND_IN"
#: Spellings that mean "the real model" (to override the environment variable from code).
_REAL = ("", "none", "real")
#: What ``--stand-in`` accepts: a stand-in, or ``none`` for the real model whatever the variable says.
STAND_IN_CHOICES: tuple[str, ...] = (*STAND_INS, "none")
#: ``dataclasses.field`` metadata of a settings class's ``stand_in`` field: ``transformers.HfArgumentParser`` turns
#: it into ``--stand-in {toy,tiny,none}`` (the command line adds ``--toy`` and ``--tiny``).
STAND_IN_FIELD_METADATA: dict[str, object] = {
    "help": "Offline stand-in for the model: toy (trained 64 px 'shapes' model, pictures follow simple prompts) or "
    f"tiny (random weights, code paths only); none: the real model. Default: the {STAND_IN_VARIABLE} variable.",
    "choices": list(STAND_IN_CHOICES),
}

#: How every picture, chart and label made from a stand-in is marked, so nobody takes it for a real model's result.
STAND_IN_MARKS: dict[str, str] = {"tiny": "tiny, random weights", "toy": "toy model (shapes)"}


def resolve_stand_in(stand_in: str | None = None) -> StandIn | None:
    """Which stand-in to use: ``stand_in`` if given (``"none"`` means the real model), else ``NBHELPERS_STAND_IN``.

    Raises:
        ConfigurationError: for any other value, naming the accepted ones.
    """
    source = "stand_in" if stand_in is not None else STAND_IN_VARIABLE
    value = stand_in if stand_in is not None else os.environ.get(STAND_IN_VARIABLE, "")
    normalised = value.strip().lower() if isinstance(value, str) else "not a string"  # True, 1: refused below
    if normalised in _REAL:
        return None
    if normalised not in STAND_INS:
        raise ConfigurationError(
            f"{source}={value!r} is not a stand-in: use one of {', '.join(STAND_INS)} (or none for the real model)."
        )
    return normalised  # mypy narrows str to StandIn by the membership test above


def stand_in_mark(stand_in: str | None) -> str:
    """The label every output of ``stand_in`` (a resolved value) carries (``""`` for the real model)."""
    return STAND_IN_MARKS[stand_in] if stand_in is not None else ""
