"""The settings that test "the same quality in fewer steps", and their seconds per image.

DeciDiffusion's claim is SD-v1.5-like images in 30 steps instead of 50. Fewer steps only count as a saving if SD
v1.5 itself loses quality at fewer steps, so the comparison (:func:`comparison_settings`) puts DeciDiffusion at
its 30 steps next to SD v1.5 at 50 and at 30, SD v1.5 with a better sampler (DPM++ at 20) and the few-step fast
paths (:mod:`nbhelpers.perf.fast_paths`). Notebook 02 generates every setting on the same prompts and seeds and
scores them; :func:`run_few_step_benchmark` times them (the GPU suite's ``few_step`` part, on full-size
random weights: fused random LoRA weights cost what real ones cost).
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nbhelpers.catalog import get_spec
from nbhelpers.loading import load_pipeline
from nbhelpers.models.random_weights import build_random_pipeline
from nbhelpers.models.schedulers import swap_scheduler
from nbhelpers.perf.fast_path_loras import write_random_lora
from nbhelpers.perf.fast_paths import FAST_PATHS, apply_fast_path, get_fast_path
from nbhelpers.perf.timing import measure

BENCH_PROMPT = "A photo of an astronaut riding a horse on Mars"
#: Steps of every setting in a dry run (the rehearsal checks the code path, not the speed).
DRY_RUN_STEPS = 2
_MODEL_TITLES = {"sd-v1-4": "SD v1.4", "sd-v1-5": "SD v1.5", "deci-v1": "DeciDiffusion", "small-sd-v0": "small-sd"}
_SCHEDULER_TITLES = {"dpm++": "DPM++"}


@dataclass(frozen=True)
class Setting:
    """One way to make a picture: a model, optionally a scheduler, a fast path and a step count.

    ``steps`` ``None`` means the default: the fast path's, else the model's (50 SD, 30 DeciDiffusion).
    """

    model: str
    steps: int | None = None
    scheduler: str | None = None
    fast_path: str | None = None

    @property
    def num_inference_steps(self) -> int:
        """The step count this setting runs."""
        if self.steps is not None:
            return self.steps
        if self.fast_path is not None:
            return get_fast_path(self.fast_path).num_inference_steps
        return get_spec(self.model).num_inference_steps

    @property
    def guidance_scale(self) -> float:
        """The guidance scale it runs with (the fast path's, else the model's default)."""
        if self.fast_path is not None:
            return get_fast_path(self.fast_path).guidance_scale
        return get_spec(self.model).guidance_scale

    @property
    def unet_passes(self) -> int:
        """UNet evaluations per image: steps, times two when classifier-free guidance is on (scale above 1)."""
        return self.num_inference_steps * (2 if self.guidance_scale > 1 else 1)

    @property
    def label(self) -> str:
        """A short name for charts: model, then the sampler or fast path, then the steps."""
        parts = [_MODEL_TITLES.get(self.model, self.model)]
        if self.fast_path is not None:
            parts.append(f"+ {get_fast_path(self.fast_path).title}")
        if self.scheduler is not None:
            parts.append(_SCHEDULER_TITLES.get(self.scheduler, self.scheduler))
        default = self.steps is None or self.steps == get_spec(self.model).num_inference_steps
        suffix = " (default)" if default and self.fast_path is None and self.scheduler is None else ""
        return f"{' '.join(parts)}, {self.num_inference_steps} steps{suffix}"

    def generation_kwargs(self) -> dict[str, Any]:
        """Arguments for :func:`nbhelpers.generate` beyond the pipeline's defaults (the step count, if set)."""
        return {"num_inference_steps": self.steps} if self.steps is not None else {}

    def load(self, **load_kwargs: Any) -> Any:
        """The pipeline of this setting: :func:`nbhelpers.load_pipeline` with its scheduler and fast path."""

        return load_pipeline(self.model, scheduler=self.scheduler, fast_path=self.fast_path, **load_kwargs)

    def row(self) -> dict[str, Any]:
        """The setting as a table row."""
        return {
            "setting": self.label,
            "model": self.model,
            "scheduler": self.scheduler or "default",
            "fast path": self.fast_path or "",
            "steps": self.num_inference_steps,
            "guidance": self.guidance_scale,
            "UNet passes per image": self.unet_passes,
        }


def comparison_settings(fast_paths: Sequence[str] = tuple(FAST_PATHS)) -> list[Setting]:
    """DeciDiffusion at 30 steps; SD v1.5 at 50, at 30 and with DPM++ at 20; then SD v1.5 with each fast path."""
    return [
        Setting("deci-v1"),
        Setting("sd-v1-5"),
        Setting("sd-v1-5", steps=30),
        Setting("sd-v1-5", steps=20, scheduler="dpm++"),
        *(Setting("sd-v1-5", fast_path=get_fast_path(name).name) for name in fast_paths),
    ]


def _random_weight_pipeline(setting: Setting, device: torch.device, folder: str) -> Any:
    """A full-size random-weight pipeline of ``setting``: its scheduler, and its fast path from a random LoRA file
    in the real layout."""

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = build_random_pipeline(setting.model, device=device, dtype=dtype)
    if setting.scheduler is not None:
        swap_scheduler(pipe, setting.scheduler)
    if setting.fast_path is not None:
        write_random_lora(folder, setting.fast_path, pipe.unet, rank=64)
        apply_fast_path(pipe, setting.fast_path, stand_in=None, source=folder)
    return pipe


def run_few_step_benchmark(
    *,
    device: str = "cuda",
    dry_run: bool = False,
    size: int = 512,
    log: Callable[[str], Any] = print,
    warmup: int = 1,
    repeats: int | None = None,
    settings: Sequence[Setting] | None = None,
) -> dict[str, Any]:
    """Seconds per image of every comparison setting at batch 1 (whole pipeline call, VAE decode included).

    On a GPU the pipelines are the full-size architectures with random weights (fp16), timed ``repeats`` times
    (default 3) at each setting's own step count; with ``dry_run`` the tiny stand-ins on the CPU, at most
    :data:`DRY_RUN_STEPS` steps and one timed call (default): a rehearsal of the code path, no real figure. Returns
    a JSON-serialisable record.
    """

    target = torch.device(device)
    repeats = repeats if repeats is not None else (1 if dry_run else 3)
    chosen = list(settings) if settings is not None else comparison_settings()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for setting in chosen:
            if dry_run:
                pipe = setting.load(stand_in="tiny", device=target, safety_checker=False, memory_savers="off")
            else:
                pipe = _random_weight_pipeline(setting, target, folder)
            pipe.set_progress_bar_config(disable=True)
            steps = min(setting.num_inference_steps, DRY_RUN_STEPS) if dry_run else setting.num_inference_steps
            call: dict[str, Any] = {
                "num_inference_steps": steps,
                "guidance_scale": setting.guidance_scale,
                "height": size,
                "width": size,
                "output_type": "np",
            }
            if setting.fast_path is not None:
                call.update(get_fast_path(setting.fast_path).call_options)

            def generate_once(pipe: Any = pipe, call: dict[str, Any] = call) -> Any:
                return pipe(BENCH_PROMPT, generator=torch.manual_seed(0), **call)

            with torch.no_grad():
                timing = measure(
                    generate_once,
                    warmup=warmup,
                    repeats=repeats,
                    device=target if target.type != "cpu" else None,
                )
            rows.append({**setting.row(), "steps": steps, **timing.summary(), "seconds_per_image": timing.median_s})
            log(f"{setting.label}: {timing.median_s:.3f} s/image ({setting.unet_passes} UNet passes)")
            del pipe
            gc.collect()
            if target.type == "cuda":
                torch.cuda.empty_cache()
    weights = (
        "DRY RUN: tiny stand-ins on the CPU (no figure here is a real model's)"
        if dry_run
        else "full-size architectures with RANDOM weights and random LoRA weights in the real layout (timings are "
        "real; pictures are not)"
    )
    return {
        "weights": weights,
        "device": str(target),
        "size_px": size,
        "warmup": warmup,
        "repeats": repeats,
        "results": rows,
    }
