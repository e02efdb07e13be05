"""Benchmark harness: end-to-end latency, throughput, UNet step time, stage shares, memory, parameters and FLOPs.

Every figure is measured with :func:`nbhelpers.perf.timing.measure`: the device is synchronised before each
clock read, the first call (compilation, autotuning) is timed separately and excluded, the median of the
repeats is reported; one more call is split into stages (prompt encoding, denoising loop, VAE decode; see
:mod:`nbhelpers.perf.stages`). Variants run one after the other in one process, on the same device. Results are
saved as JSON with the device, library versions and settings; random weights and stand-ins are labelled.
The settings, :class:`BenchSettings`, live in :mod:`nbhelpers.perf.bench_settings` (torch-free, for ``--help``) and
are importable from here too.

    nbhelpers bench --models sd-v1-5 deci-v1 --weights random --device cuda --optimize none compile
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nbhelpers.atomic import write_json_atomic
from nbhelpers.catalog import get_spec
from nbhelpers.device import pick_device, pick_dtype
from nbhelpers.environment import environment_report
from nbhelpers.loading import load_pipeline
from nbhelpers.models.random_weights import build_random_pipeline
from nbhelpers.perf.bench_settings import MAX_TIMED_CALLS as MAX_TIMED_CALLS  # re-exported: it lived here
from nbhelpers.perf.bench_settings import WEIGHTS as WEIGHTS  # re-exported: it lived here
from nbhelpers.perf.bench_settings import BenchSettings
from nbhelpers.perf.flops import component_parameters, model_step_flops, unet_step_flops
from nbhelpers.perf.optimize import optimize_pipeline
from nbhelpers.perf.stages import StageTimes, profile_stages
from nbhelpers.perf.timing import Timing, measure
from nbhelpers.stand_in import StandIn, resolve_stand_in, stand_in_mark

BENCH_PROMPT = "A photo of an astronaut riding a horse on Mars"


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
