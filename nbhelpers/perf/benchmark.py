"""Benchmark harness: end-to-end latency, throughput, UNet step time, stage shares, memory, parameters and FLOPs.

Every figure is measured with :func:`nbhelpers.perf.timing.measure`: the device is synchronised before each
clock read, the first call (compilation, autotuning) is timed separately and excluded, the median of the
repeats is reported; one more call is split into stages (prompt encoding, denoising loop, VAE decode; see
:mod:`nbhelpers.perf.stages`). Variants run one after the other in one process, on the same device. Results are
saved as JSON with the device, library versions and settings; random weights and stand-ins are labelled.

    nbhelpers bench --models sd-v1-5 deci-v1 --weights random --device cuda --optimize none compile
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from nbhelpers.atomic import write_json_atomic
from nbhelpers.catalog import get_spec
from nbhelpers.checks import real_number, text, whole_number
from nbhelpers.device import pick_device, pick_dtype
from nbhelpers.environment import environment_report
from nbhelpers.errors import ConfigurationError
from nbhelpers.generation import MAX_IMAGES, MAX_STEPS, catalog_size_multiple, validate_settings
from nbhelpers.loading import load_pipeline
from nbhelpers.models.random_weights import build_random_pipeline
from nbhelpers.perf.flops import component_parameters, model_step_flops, unet_step_flops
from nbhelpers.perf.optimize import OPTIMIZE_MODES, optimize_pipeline
from nbhelpers.perf.stages import StageTimes, profile_stages
from nbhelpers.perf.timing import Timing, measure
from nbhelpers.stand_in import STAND_IN_FIELD_METADATA, StandIn, resolve_stand_in, stand_in_mark

WEIGHTS = ("hub", "random")
#: The most warm-up or timed calls one variant may take (each is a whole generation).
MAX_TIMED_CALLS = 1000
BENCH_PROMPT = "A photo of an astronaut riding a horse on Mars"


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
    device: str | None = field(default=None, metadata={"help": "cuda, mps or cpu (default: the best available)."})
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


def measure_matmul_peak_tflops(device: torch.device, dtype: torch.dtype = torch.float16, size: int = 8192) -> float:
    """Dense matmul rate of ``device`` in TFLOP/s (median of 10 calls after warm-up): the practical peak."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    timing = measure(lambda: a @ b, warmup=3, repeats=10, device=device)
    return 2 * size**3 / timing.median_s / 1e12


def _load(name: str, stand_in: StandIn | None, weights: str, device: torch.device, dtype: torch.dtype) -> Any:
    if stand_in is None and weights == "random":
        return build_random_pipeline(name, device=device, dtype=dtype)

    return load_pipeline(
        name, stand_in=stand_in or "none", device=device, dtype=dtype, safety_checker=False, memory_savers="off"
    )


def _unet_inputs(pipe: Any, batch: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    unet = pipe.unet
    parameter = next(unet.parameters())
    scale = pipe.vae_scale_factor
    latents = torch.randn(
        2 * batch,
        unet.config.in_channels,
        height // scale,
        width // scale,
        device=parameter.device,
        dtype=parameter.dtype,
    )
    context = torch.randn(
        2 * batch, 77, unet.config.cross_attention_dim, device=parameter.device, dtype=parameter.dtype
    )
    # One timestep for the batch, a 0-d tensor on the device, as the pipelines pass it: a compiled UNet then runs
    # the graph it compiled for generation instead of compiling (about a minute on a GPU) for another input shape.
    timestep = torch.tensor(500, device=parameter.device, dtype=torch.long)
    return latents, timestep, context


def _measure_variant(
    pipe: Any, settings: BenchSettings, device: torch.device, batch: int, steps: int, height: int, width: int
) -> tuple[Timing, Timing, StageTimes]:
    """Time whole generations of ``batch`` images, one guided UNet step, and the stages of one more generation."""
    kwargs: dict[str, Any] = {"num_inference_steps": steps, "height": height, "width": width, "output_type": "np"}
    prompts = [BENCH_PROMPT] * batch

    def generators() -> list[torch.Generator]:
        return [torch.Generator("cpu").manual_seed(i) for i in range(batch)]

    def generate_once() -> Any:
        return pipe(prompts, generator=generators(), **kwargs).images

    inputs = _unet_inputs(pipe, batch, height, width)
    with torch.no_grad():
        end_to_end = measure(generate_once, warmup=settings.warmup, repeats=settings.repeats, device=device)
        step = measure(
            lambda: pipe.unet(*inputs, return_dict=False),
            warmup=settings.warmup,
            repeats=settings.repeats,
            device=device,
        )
        # After the timed calls, so compilation and graph capture are over; a separate call, since the profile
        # synchronises at every step.
        stages = profile_stages(pipe, prompts, generator=generators(), device=device, **kwargs)
    return end_to_end, step, stages


def run_benchmark(settings: BenchSettings, log: Any = print) -> dict[str, Any]:
    """Measure every (model, optimize mode, batch size) of ``settings``; return a JSON-serialisable report."""
    settings.validate()
    device = pick_device(settings.device)
    dtype = pick_dtype(device)
    stand_in = resolve_stand_in(settings.stand_in)
    height = settings.height or (64 if stand_in else 512)
    width = settings.width or (64 if stand_in else 512)
    peak = settings.peak_tflops
    if peak is None and device.type == "cuda":
        peak = measure_matmul_peak_tflops(device, dtype)
    rows: list[dict[str, Any]] = []
    for name in settings.models:
        spec = get_spec(name)
        steps = settings.steps or spec.num_inference_steps
        pipe = _load(name, stand_in, settings.weights, device, dtype)
        pipe.set_progress_bar_config(disable=True)
        parameters = component_parameters(pipe)
        if stand_in:  # counted on the stand-in's own UNet; the published configs' counts are of the real ones
            flops_per_step = {
                b: unet_step_flops(pipe.unet, height=height, width=width, batch_size=b) for b in settings.batch_sizes
            }
        else:
            flops_per_step = {
                b: model_step_flops(name, height=height, width=width, batch_size=b) for b in settings.batch_sizes
            }
        eager_images: dict[int, np.ndarray] = {}
        for mode in settings.optimize:
            optimize_pipeline(pipe, mode)
            for batch in settings.batch_sizes:
                end_to_end, step, stages = _measure_variant(pipe, settings, device, batch, steps, height, width)
                images = np.asarray(end_to_end.result, dtype=np.float32)
                if mode == settings.optimize[0]:
                    eager_images[batch] = images
                difference = float(np.abs(images - eager_images[batch]).max()) if batch in eager_images else None
                achieved = flops_per_step[batch] / step.median_s / 1e12
                row = {
                    "model": name,
                    "optimize": mode,
                    "batch_size": batch,
                    "steps": steps,
                    "height": height,
                    "width": width,
                    "seconds_per_image": end_to_end.median_s / batch,
                    "images_per_second": batch / end_to_end.median_s,
                    "first_call_seconds": end_to_end.first_call_s,
                    "end_to_end_runs_seconds": end_to_end.runs_s,
                    "unet_step_ms": step.median_s * 1e3,
                    "peak_memory_gib": end_to_end.peak_memory_gib,
                    "gflop_per_guided_step": flops_per_step[batch] / 1e9,
                    "unet_tflops_achieved": achieved,
                    "share_of_peak": achieved / peak if peak else None,
                    "max_abs_pixel_difference_vs_first_mode": difference,
                    "stages": stages.as_dict(),
                    "parameters": parameters,
                }
                rows.append(row)
                log(
                    f"{name:12s} {mode:13s} batch {batch}: {row['seconds_per_image']:.3f} s/image, "
                    f"{row['images_per_second']:.2f} img/s, UNet step {row['unet_step_ms']:.2f} ms, "
                    f"first call {row['first_call_seconds']:.1f} s, "
                    f"loop {stages.shares()['loop']:.0%} of the time"
                    + (f", {row['peak_memory_gib']:.2f} GiB" if row["peak_memory_gib"] is not None else "")
                    + (f", diff vs {settings.optimize[0]} {difference:.4f}" if difference is not None else "")
                )
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    weights_label = (
        f"offline stand-in models ({stand_in_mark(stand_in)}): timings of small models, not of the real ones"
        if stand_in
        else {
            "hub": "real weights from the Hugging Face hub",
            "random": "full-size architectures with RANDOM weights (timings are real; images are not)",
        }[settings.weights]
    )
    return {
        "weights": weights_label,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "peak_tflops": peak,
        "environment": environment_report().as_dict(),
        "settings": asdict(settings),
        "results": rows,
    }


def save_report(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the report as JSON atomically; return the path."""
    return write_json_atomic(path, report)
