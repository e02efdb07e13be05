"""The settings of ``nbhelpers bench`` (:mod:`nbhelpers.perf.benchmark`): :class:`BenchSettings`, checked before
anything is loaded.

Each field's help text lives in its ``metadata``, so the command line shows it under ``--help``. Kept free of torch
and diffusers at import: ``nbhelpers bench --help`` imports this module, not the benchmark harness.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nbhelpers.catalog import get_spec
from nbhelpers.checks import real_number, text, whole_number
from nbhelpers.errors import ConfigurationError
from nbhelpers.perf.optimize import OPTIMIZE_MODES
from nbhelpers.stand_in import STAND_IN_FIELD_METADATA, resolve_stand_in

WEIGHTS = ("hub", "random")
#: The most warm-up or timed calls one variant may take (each is a whole generation).
MAX_TIMED_CALLS = 1000


@dataclass
class BenchSettings:
    """What to measure. Each field's help text is its documentation (``nbhelpers bench --help`` shows it)."""

    models: list[str] = field(
        default_factory=lambda: ["sd-v1-5", "deci-v1"], metadata={"help": "Catalog names of the models to measure."}
    )
    weights: Literal["random", "hub"] = field(
        default="random",
        metadata={
            "help": "random: full-size architectures with random weights (no download, same speed); "
            "hub: the real weights. A --stand-in replaces both (tiny: a CPU smoke test)."
        },
    )
    stand_in: str | None = field(default=None, metadata=STAND_IN_FIELD_METADATA)
    device: str | None = field(
        default=None, metadata={"help": "cuda, cuda:N, mps or cpu (default: the best available)."}
    )
    steps: int | None = field(
        default=None, metadata={"help": "Denoising steps (default: each model's, 50 SD, 30 DeciDiffusion)."}
    )
    batch_sizes: list[int] = field(default_factory=lambda: [1], metadata={"help": "Images per pipeline call."})
    optimize: list[str] = field(
        default_factory=lambda: ["none"],
        metadata={
            "help": f"Fast-path modes to compare, in order, 'none' first (the reference output); "
            f"from {', '.join(OPTIMIZE_MODES)}."
        },
    )
    height: int | None = field(
        default=None, metadata={"help": "Image height in pixels (default 512; 64 for a stand-in)."}
    )
    width: int | None = field(
        default=None, metadata={"help": "Image width in pixels (default 512; 64 for a stand-in)."}
    )
    warmup: int = field(
        default=2, metadata={"help": "Untimed calls first (>= 1; compiled modes need 2: compile, capture graphs)."}
    )
    repeats: int = field(default=5, metadata={"help": "Timed calls; the median is reported."})
    peak_tflops: float | None = field(
        default=None,
        metadata={
            "help": "The device's dense peak in TFLOP/s for the utilisation figure (default: measured "
            "with a matmul on CUDA, not reported elsewhere)."
        },
    )
    out: str = field(default="benchmarks/results/bench.json", metadata={"help": "Where to write the JSON report."})

    def validate(self) -> None:
        """Raise :class:`~nbhelpers.errors.ConfigurationError` (a ``ValueError``) naming the setting at fault.

        Checked before anything is loaded: each value's type and range, image sides in the multiple every model
        needs (8 px for SD v1.x, 64 for DeciDiffusion), the device (one this machine has) and ``out`` (a file
        path, not an existing folder).
        """
        # Lazy: the device check and generate()'s checks load torch and diffusers, which `nbhelpers bench --help`
        # (it reads only the fields) should not; validating comes just before a run that loads them anyway.
        from nbhelpers.device import pick_device
        from nbhelpers.generation import MAX_IMAGES, MAX_STEPS, catalog_size_multiple, validate_settings

        if not isinstance(self.models, (list, tuple)) or not self.models:
            raise ConfigurationError(f"models must name at least one catalog model; got {self.models!r}.")
        for name in self.models:
            get_spec(text("each of models", name, max_chars=200))
        if self.weights not in WEIGHTS:
            raise ConfigurationError(
                f"weights must be one of {', '.join(WEIGHTS)}; got {self.weights!r} (the offline models: --stand-in)."
            )
        resolve_stand_in(self.stand_in)
        pick_device(self.device)
        unknown = [m for m in self.optimize if m not in OPTIMIZE_MODES] if isinstance(self.optimize, list) else []
        if unknown or not self.optimize or not isinstance(self.optimize, list):
            raise ConfigurationError(
                f"Unknown optimize mode(s) {unknown or self.optimize}; choose from {', '.join(OPTIMIZE_MODES)}."
            )
        for name, value in (("warmup", self.warmup), ("repeats", self.repeats)):
            if isinstance(value, int) and value < 1:
                raise ConfigurationError(f"{name} must be at least 1: numbers are never taken without a warm-up.")
            whole_number(name, value, 1, MAX_TIMED_CALLS)
        if not isinstance(self.batch_sizes, (list, tuple)) or not self.batch_sizes:
            raise ConfigurationError(f"batch_sizes must list at least one batch size; got {self.batch_sizes!r}.")
        for batch in self.batch_sizes:
            whole_number("each of batch_sizes", batch, 1, MAX_IMAGES)
        if self.steps is not None:
            # one step cannot be told apart from the set-up in the stage profile (nbhelpers.perf.stages)
            whole_number("steps", self.steps, 2, MAX_STEPS)
        validate_settings(  # the same checks as a generate() call: types, ranges, each model's size multiple
            num_inference_steps=self.steps,
            guidance_scale=None,
            height=self.height,
            width=self.width,
            num_images=1,
            multiple=max(catalog_size_multiple(name) for name in self.models),
        )
        if self.peak_tflops is not None:
            real_number("peak_tflops", self.peak_tflops, 1e-3, 1e6, hint="the device's dense peak in TFLOP/s")
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out).strip():
            raise ConfigurationError(f"out must name the JSON report's file, e.g. bench.json; got {self.out!r}.")
        out = Path(self.out).expanduser()
        if out.is_dir():
            raise ConfigurationError(
                f"out is the folder {out}; give the report's file name, e.g. --out {out / 'bench.json'}."
            )
