"""Swapping a pipeline's scheduler (sampler) by a short name, keeping the model's training settings."""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

SCHEDULERS: dict[str, type] = {
    "ddim": DDIMScheduler,
    "pndm": PNDMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "lms": LMSDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}


def swap_scheduler(pipe: DiffusionPipeline, name: str) -> DiffusionPipeline:
    """Replace ``pipe.scheduler`` with the scheduler called ``name`` (see :data:`SCHEDULERS`), in place.

    The new scheduler is built ``from_config`` of the old one, so the noise schedule the model was trained
    with (betas, prediction type, zero-SNR rescaling, timestep spacing) carries over. Returns ``pipe``.
    """
    key = name.strip().lower()
    if key not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}.")
    pipe.scheduler = SCHEDULERS[key].from_config(pipe.scheduler.config)
    return pipe
