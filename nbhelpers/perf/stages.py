"""Where one generation's time goes: prompt encoding, the denoising loop, the VAE decode.

One pipeline call is timed with the device synchronised at its start, at the end of every denoising step (through
diffusers' ``callback_on_step_end``, which runs outside the UNet, so compiled and CUDA-graph UNets are timed the
same way) and at its end. The loop's steps cost about the same each, so the median step interval says how long
the first step took, and the time before it is the set-up:

- ``before_loop_s``: tokenising and running the text encoder (twice with guidance), preparing latents and
  timesteps;
- ``loop_s``: every denoising step (the guided UNet call, guidance arithmetic, the scheduler step);
- ``after_loop_s``: the VAE decode and the conversion of the pictures to the requested output type.

The synchronisation at each step adds a little to ``loop_s`` (one wait per step); the shares are for reading
where time goes, the end-to-end figure comes from an unprofiled call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nbhelpers.device import synchronize

STAGES = ("before_loop", "loop", "after_loop")


@dataclass(frozen=True)
class StageTimes:
    """Seconds of each stage of one pipeline call (see the module docstring) and the denoising loop's iterations
    (UNet calls: PNDM, SD's scheduler, runs one more than the steps asked for)."""

    before_loop_s: float
    loop_s: float
    after_loop_s: float
    loop_iterations: int

    @property
    def total_s(self) -> float:
        """The whole call (s)."""
        return self.before_loop_s + self.loop_s + self.after_loop_s

    def shares(self) -> dict[str, float]:
        """Each stage's share of the call, summing to 1."""
        total = self.total_s
        return {
            "before_loop": self.before_loop_s / total,
            "loop": self.loop_s / total,
            "after_loop": self.after_loop_s / total,
        }

    def as_dict(self) -> dict[str, Any]:
        """Seconds, steps and shares, JSON-serialisable."""
        return {
            "before_loop_s": self.before_loop_s,
            "loop_s": self.loop_s,
            "after_loop_s": self.after_loop_s,
            "loop_iterations": self.loop_iterations,
            "shares": self.shares(),
        }


def profile_stages(
    pipe: Any,
    *args: Any,
    device: torch.device | str | None = None,
    clock: Callable[[], float] = time.perf_counter,
    **call_kwargs: Any,
) -> StageTimes:
    """Call ``pipe(*args, **call_kwargs)`` once and split its time into stages.

    Args:
        pipe: a diffusers text-to-image pipeline (anything whose call takes ``callback_on_step_end``).
        device: the device it runs on, synchronised before each clock read (``None``: CPU work).
        clock: the clock read (a fake one in tests).

    Raises:
        ValueError: fewer than two denoising steps ran (one step cannot be told apart from the set-up).
    """
    marks: list[float] = []

    def on_step_end(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        synchronize(device)
        marks.append(clock())
        return callback_kwargs

    synchronize(device)
    start = clock()
    pipe(*args, callback_on_step_end=on_step_end, **call_kwargs)
    synchronize(device)
    end = clock()
    if len(marks) < 2:
        raise ValueError(f"Stage profiling needs at least 2 denoising steps; {len(marks)} ran.")
    step_s = statistics.median(later - earlier for earlier, later in zip(marks, marks[1:], strict=False))
    # The first step ends at marks[0]; it took about as long as the others. A first step slower than the median
    # would otherwise move time into the loop, so the set-up is never made negative.
    before_loop_s = max(marks[0] - start - step_s, 0.0)
    loop_s = marks[-1] - start - before_loop_s
    return StageTimes(
        before_loop_s=before_loop_s, loop_s=loop_s, after_loop_s=end - marks[-1], loop_iterations=len(marks)
    )
