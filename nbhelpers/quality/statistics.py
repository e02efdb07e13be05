"""Mean and 95% bootstrap confidence interval of a score, per setting, reproducible for a given seed.

A handful of prompts gives a noisy mean: diffusers' published SD v1.4 vs v1.5 check rests on six pictures. The
interval says how far the mean could move with other prompts and seeds of the same kind; two settings whose
intervals overlap widely are not shown apart by the data.

The interval is ``scipy.stats.bootstrap``'s (bias-corrected and accelerated, BCa, 9,999 resamples by default)
with a seeded ``numpy`` generator, so the same scores and seed give the same interval on every run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from scipy import stats

#: Resamples by default (scipy's default).
DEFAULT_RESAMPLES = 9999
Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class Summary:
    """The mean of ``n`` scores and its bootstrap confidence interval ``[low, high]``.

    ``low`` and ``high`` are NaN for a single score (one value has no spread to resample) and equal the mean
    when every score is the same.
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    def __str__(self) -> str:
        if math.isnan(self.low):
            return f"{self.mean:.2f} (n={self.n}, no interval)"
        return f"{self.mean:.2f} [{self.low:.2f}, {self.high:.2f}] (n={self.n}, {self.confidence:.0%} CI)"


def summarise(
    scores: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Summary:
    """The mean of ``scores`` and its bootstrap confidence interval (BCa; the same for the same ``seed``).

    Raises:
        ValueError: for no scores, a non-finite score or a confidence outside ``(0, 1)``.
    """
    values = np.asarray(scores, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("No scores to summarise.")
    if not np.all(np.isfinite(values)):
        raise ValueError("Scores must be finite numbers (found NaN or infinity).")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie between 0 and 1; got {confidence}.")
    mean = float(values.mean())
    if values.size == 1:
        return Summary(mean, math.nan, math.nan, 1, confidence)
    if np.all(values == values[0]):  # no spread: BCa is undefined, the interval is the point
        return Summary(mean, mean, mean, int(values.size), confidence)
    result = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return Summary(mean, float(interval.low), float(interval.high), int(values.size), confidence)


def summarise_by(
    records: Iterable[Mapping[str, Any]],
    key: str | Callable[[Mapping[str, Any]], Key],
    value: str = "clip_score",
    **summary_options: Any,
) -> dict[Any, Summary]:
    """One :class:`Summary` per setting, from per-picture records (e.g. :meth:`ClipScores.rows` plus settings).

    Args:
        records: dictionaries, one per picture.
        key: the column that names the setting (``"model"``), or a function of a record returning a hashable
            setting (``lambda r: (r["model"], r["steps"])``).
        value: the column holding the score.
        **summary_options: ``confidence``, ``n_resamples``, ``seed`` for :func:`summarise`.

    Returns:
        ``{setting: Summary}`` in the order settings first appear.
    """
    setting_of = (lambda record: record[key]) if isinstance(key, str) else key
    groups: dict[Any, list[float]] = {}
    for record in records:
        groups.setdefault(setting_of(record), []).append(float(record[value]))
    return {setting: summarise(scores, **summary_options) for setting, scores in groups.items()}
