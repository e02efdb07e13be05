import time

import pytest

from nbhelpers.perf.timing import measure


def test_measure_separates_first_call_and_counts_runs():
    calls = []

    def work():
        calls.append(None)
        time.sleep(0.05 if len(calls) == 1 else 0.01)  # the first call is slow, like a compile
        return len(calls)

    timing = measure(work, warmup=2, repeats=3)
    assert len(calls) == 5
    assert len(timing.runs_s) == 3
    assert timing.first_call_s >= 0.05
    assert 0.01 <= timing.min_s <= timing.median_s <= timing.max_s < timing.first_call_s
    assert timing.result == 5
    assert timing.peak_memory_bytes is None  # CPU
    assert "median" in str(timing) and set(timing.summary()) >= {"median_s", "first_call_s", "runs_s"}


@pytest.mark.parametrize("kwargs", [{"warmup": 0}, {"repeats": 0}])
def test_measure_refuses_unfair_settings(kwargs):
    with pytest.raises(ValueError):
        measure(lambda: None, **kwargs)
