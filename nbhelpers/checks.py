"""Argument checks that name the setting, the value given and what to pass instead, in one line.

Settings arrive from code, notebooks (papermill parameters), JSON and the command line, so a value may be a
string, a bool, a float or NaN where a whole number is expected. These checks refuse anything else with a
:class:`~nbhelpers.errors.ConfigurationError` (a ``ValueError``) before any work is done, so the mistake never
surfaces as a ``TypeError`` or ``IndexError`` deep inside a library.

- A ``bool`` is never a number here (``True`` is an ``int`` to Python, but ``steps=True`` is a mistake).
- A whole-valued float (``30.0``, as JSON and YAML often give) counts as that whole number; ``30.5`` is refused.
- NaN and infinities are refused wherever a number is expected.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from nbhelpers.errors import ConfigurationError

#: The largest seed ``torch.Generator.manual_seed`` takes (it is a 64-bit unsigned integer); kept here, free of torch,
#: so prompts files, the grid and the endpoint contract check seeds against the range :func:`generate` accepts.
MAX_SEED = 2**64 - 1
#: Longest prompt accepted: CLIP reads 77 tokens (a few hundred characters) and ignores the rest, and tokenising
#: 100,000 characters takes seconds and logs them all.
MAX_PROMPT_CHARS = 2000
#: Why longer prompts are refused, as :func:`text` messages say it.
PROMPT_LIMIT = "the text encoder reads the first 77 tokens, a few hundred characters, and ignores the rest"


def shown(value: Any) -> str:
    """``value`` as an error message shows it: its repr (shortened) and, for non-numbers, its type."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return text if _is_number(value) else f"{text} ({type(value).__name__})"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def parse_number(name: str, value: Any) -> Any:
    """``value`` read as the number it writes when it is text (a CSV cell, an environment variable): ``"20"`` is
    ``20``, ``" 20.0 "`` is ``20.0`` (spreadsheets write the whole numbers of a column with gaps so), ``"1e3"`` is
    ``1000.0``. Any other value comes back as it is: :func:`whole_number` and :func:`real_number` check it.

    Raises:
        ConfigurationError: text that is not a number, naming ``name`` and the text.
    """
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    try:  # digits alone as an int: a seed such as 2**64 - 1 keeps every digit (a float would round it)
        return int(stripped) if stripped.lstrip("+-").isdigit() else float(stripped)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number; got {shown(value)}.") from None


def whole_number(name: str, value: Any, low: int, high: int | None = None, *, unit: str = "") -> int:
    """Return ``value`` as an ``int`` if it is a whole number in ``[low, high]`` (``high=None``: no upper bound).

    Raises:
        ConfigurationError: naming ``name``, the allowed range and the value given.
    """
    unit = f" {unit}" if unit else ""
    allowed = f"between {low} and {high}{unit}" if high is not None else f"at least {low}{unit}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{name} must be {allowed} (a whole number); got {shown(value)}.")
    number_like: Any = value  # a numbers.Real: int() and float() take it whatever its class
    if isinstance(value, numbers.Integral):
        number = int(number_like)
    elif math.isfinite(number_like) and float(number_like).is_integer():
        number = int(number_like)
    else:
        raise ConfigurationError(f"{name} must be {allowed} (a whole number); got {shown(value)}.")
    if number < low or (high is not None and number > high):
        raise ConfigurationError(f"{name} must be {allowed} (a whole number); got {number}.")
    return number


def real_number(name: str, value: Any, low: float, high: float, *, hint: str = "") -> float:
    """Return ``value`` as a ``float`` if it is a finite number in ``[low, high]``.

    Raises:
        ConfigurationError: naming ``name``, the allowed range (and ``hint``) and the value given.
    """
    hint = f" ({hint})" if hint else ""
    allowed = f"between {low:g} and {high:g}{hint}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be {allowed}; got {shown(value)}.")
    number = float(value)
    if not low <= number <= high:
        raise ConfigurationError(f"{name} must be {allowed}; got {value}.")
    return number


def text(name: str, value: Any, *, max_chars: int, allow_empty: bool = False, why: str = "") -> str:
    """Return ``value`` if it is a string of at most ``max_chars`` characters (not blank unless ``allow_empty``);
    ``why`` says why longer ones are refused.

    Raises:
        ConfigurationError: naming ``name`` and what was wrong.
    """
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string; got {value!r:.60} ({type(value).__name__}).")
    if not allow_empty and not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string; got {value!r}.")
    if len(value) > max_chars:
        why = f" ({why})" if why else ""
        raise ConfigurationError(f"{name} has {len(value):,} characters; at most {max_chars:,} are accepted{why}.")
    return value
