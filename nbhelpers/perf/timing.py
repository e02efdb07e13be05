"""Honest wall-clock timing of GPU or CPU work: synchronised, warmed up, first call reported apart."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from nbhelpers.device import peak_memory_bytes, reset_peak_memory, synchronize


@dataclass
class Timing:
    """Measured times of one callable, in seconds; memory in bytes.

    Attributes:
        first_call_s: the very first call (includes compilation, autotuning, allocator warm-up).
        runs_s: each timed call after warm-up.
        peak_memory_bytes: peak CUDA memory allocated during the timed calls (``None`` off CUDA).
        result: what the last call returned.
    """

    first_call_s: float
    runs_s: list[float]
    peak_memory_bytes: int | None
    result: Any = None

    @property
    def median_s(self) -> float:
        """Median of the timed runs (s)."""
        return statistics.median(self.runs_s)

    @property
    def min_s(self) -> float:
        """Fastest timed run (s)."""
        return min(self.runs_s)

    @property
    def max_s(self) -> float:
        """Slowest timed run (s)."""
        return max(self.runs_s)

    @property
    def peak_memory_gib(self) -> float | None:
        """Peak memory in GiB (``None`` off CUDA)."""
        return None if self.peak_memory_bytes is None else self.peak_memory_bytes / 2**30

    def summary(self) -> dict[str, float | int | None]:
        """Figures without the result, JSON-serialisable."""
        figures = {k: v for k, v in asdict(self).items() if k != "result"}
        figures.update(median_s=self.median_s, min_s=self.min_s, max_s=self.max_s)
        return figures

    def __str__(self) -> str:
        memory = "" if self.peak_memory_gib is None else f", peak {self.peak_memory_gib:.2f} GiB"
        return (
            f"median {self.median_s:.4f} s (min {self.min_s:.4f}, max {self.max_s:.4f}, n={len(self.runs_s)}), "
            f"first call {self.first_call_s:.4f} s{memory}"
        )


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int = 1,
    repeats: int = 5,
    device: torch.device | str | None = None,
) -> Timing:
    """Time ``fn()`` properly.

    The first call is timed on its own (it pays for compilation and caches), then ``warmup - 1`` more
    untimed calls run, then ``repeats`` timed calls. The device is synchronised before every clock
    read, so queued GPU work is counted. Peak memory covers the timed calls only.

    Args:
        fn: the work, with no arguments (wrap it in a lambda).
        warmup: calls before timing starts, the first one included; at least 1.
        repeats: timed calls; at least 1.
        device: the device doing the work (``None``: synchronise nothing, for CPU-only work).
    """
    if warmup < 1:
        raise ValueError(f"warmup must be at least 1 (the first call is never a fair sample); got {warmup}.")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1; got {repeats}.")
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    first_call_s = time.perf_counter() - start
    for _ in range(warmup - 1):
        result = fn()
    synchronize(device)
    reset_peak_memory(device)
    runs: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        runs.append(time.perf_counter() - start)
    return Timing(first_call_s=first_call_s, runs_s=runs, peak_memory_bytes=peak_memory_bytes(device), result=result)
