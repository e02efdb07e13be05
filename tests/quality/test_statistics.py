"""Mean and bootstrap interval: contains the mean, narrows with more scores, the same for the same seed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nbhelpers.quality.statistics import summarise, summarise_by


def _scores(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(30.0, 3.0, count)


def test_the_interval_contains_the_mean():
    summary = summarise(_scores(20))
    assert summary.low < summary.mean < summary.high
    assert summary.mean == pytest.approx(float(_scores(20).mean()))
    assert summary.n == 20 and summary.confidence == 0.95


def test_more_scores_give_a_narrower_interval():
    widths = [summarise(_scores(count)).high - summarise(_scores(count)).low for count in (10, 40, 160)]
    assert widths[0] > widths[1] > widths[2]


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    scores = _scores(15)
    assert summarise(scores, seed=7) == summarise(scores, seed=7)
    assert summarise(scores, seed=7) != summarise(scores, seed=8)


def test_a_higher_confidence_gives_a_wider_interval():
    scores = _scores(30)
    narrow, wide = summarise(scores, confidence=0.8), summarise(scores, confidence=0.99)
    assert wide.low < narrow.low and narrow.high < wide.high


def test_one_score_has_no_interval_and_equal_scores_a_point():
    single = summarise([31.0])
    assert single.mean == 31.0 and math.isnan(single.low) and math.isnan(single.high)
    assert "no interval" in str(single)
    same = summarise([25.0, 25.0, 25.0])
    assert (same.low, same.mean, same.high) == (25.0, 25.0, 25.0)


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="No scores"):
        summarise([])
    with pytest.raises(ValueError, match="finite"):
        summarise([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        summarise([1.0, 2.0], confidence=95)


def test_summaries_per_setting_from_per_picture_rows():
    rows = [{"model": model, "steps": 30, "clip_score": score} for model in ("a", "b") for score in _scores(6)]
    rows += [{"model": "c", "steps": 30, "clip_score": 99.0}]
    by_model = summarise_by(rows, "model")
    assert list(by_model) == ["a", "b", "c"]
    assert by_model["a"] == summarise(_scores(6))
    by_setting = summarise_by(rows, lambda row: (row["model"], row["steps"]))
    assert by_setting[("c", 30)].mean == 99.0 and by_setting[("c", 30)].n == 1
