"""Reproducible generation: seeds per image, validated settings, and telling black images apart."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from nbhelpers.images import save_image
from nbhelpers.loading import load_info
from nbhelpers.stand_in import StandIn, stand_in_mark

MAX_STEPS = 1000
MAX_SIDE = 2048


@dataclass
class Generation:
    """Images from one :func:`generate` call and everything needed to make them again.

    Attributes:
        images: PIL images, ``len(prompts) * num_images`` of them, prompt-major.
        prompts: the prompt of each image.
        seeds: the seed of each image (image i used ``torch.Generator().manual_seed(seeds[i])``).
        settings: the pipeline arguments used (steps, guidance, size, ...).
        model: label of the model (marked "tiny, random weights" for offline stand-ins).
        seconds: wall-clock time of the pipeline call (s).
        nsfw: per image, ``True`` if the safety checker blacked it out, ``None`` if no checker ran.
        nan: per image, ``True`` if the decoded image held NaNs (fp16 overflow: it shows black or noise).
        stand_in: ``"toy"`` or ``"tiny"`` when an offline stand-in made the images (not the named model's
            results), ``None`` for the real model.
    """

    images: list[Image.Image]
    prompts: list[str]
    seeds: list[int]
    settings: dict[str, Any]
    model: str
    seconds: float
    nsfw: list[bool | None] = field(default_factory=list)
    nan: list[bool] = field(default_factory=list)
    stand_in: StandIn | None = None

    def diagnosis(self) -> list[str]:
        """Per image: ``"ok"``, ``"blacked out by the safety checker"`` or ``"NaN (fp16 overflow)"``."""
        notes = []
        for flagged, broken in zip(self.nsfw, self.nan, strict=True):
            if flagged:
                notes.append("blacked out by the safety checker")
            elif broken:
                notes.append("NaN (fp16 overflow): try dtype='float32' or another GPU")
            else:
                notes.append("ok")
        return notes

    def labels(self) -> list[str]:
        """One short caption per image: seed and prompt, marked when a stand-in made it."""
        mark = stand_in_mark(self.stand_in)
        mark = f" ({mark})" if mark else ""
        return [f"seed {seed}: {prompt}{mark}" for prompt, seed in zip(self.prompts, self.seeds, strict=True)]

    def save(self, folder: str | Path, stem: str = "image") -> list[Path]:
        """Save every image as PNG with its prompt, seed, steps and model in the metadata; return the paths."""
        folder = Path(folder)
        return [
            self.save_one(index, folder / f"{stem}-{index:03d}-seed{seed}.png") for index, seed in enumerate(self.seeds)
        ]

    def save_one(self, index: int, path: str | Path, model: str | None = None) -> Path:
        """Save image ``index`` as the PNG ``path`` with its settings in the metadata (``model`` overrides the
        model label, e.g. to mark a fine-tuned model); return the path."""
        extra = {k: v for k, v in self.settings.items() if k != "num_inference_steps"}
        return save_image(
            self.images[index],
            path,
            prompt=self.prompts[index],
            seed=self.seeds[index],
            steps=self.settings.get("num_inference_steps"),
            model=model or self.model,
            **extra,
        )


def default_settings(pipe: DiffusionPipeline) -> dict[str, Any]:
    """The model's published defaults (steps, guidance, ...) if the pipeline came from :func:`load_pipeline`, or those
    of the few-step fast path it runs (:func:`nbhelpers.perf.fast_paths.apply_fast_path`)."""
    info = load_info(pipe)
    settings = info.spec.generation_defaults() if info is not None and info.spec is not None else {}
    fast_path = getattr(pipe, "nbhelpers_fast_path", None)
    return {**settings, **fast_path.generation_defaults()} if fast_path is not None else settings


def validate_settings(
    *,
    num_inference_steps: int | None,
    guidance_scale: float | None,
    height: int | None,
    width: int | None,
    num_images: int,
    guidance_rescale: float | None = None,
) -> None:
    """Raise ``ValueError`` naming the setting and its allowed range when a value is out of range."""
    if num_inference_steps is not None and not 1 <= int(num_inference_steps) <= MAX_STEPS:
        raise ValueError(f"num_inference_steps must be between 1 and {MAX_STEPS}; got {num_inference_steps}.")
    if guidance_scale is not None and not 0 <= float(guidance_scale) <= 50:
        raise ValueError(f"guidance_scale must be between 0 and 50 (guidance is on above 1); got {guidance_scale}.")
    if guidance_rescale is not None and not 0 <= float(guidance_rescale) <= 1:
        raise ValueError(f"guidance_rescale must be between 0 and 1; got {guidance_rescale}.")
    for name, side in (("height", height), ("width", width)):
        if side is not None and (side % 8 or not 8 <= side <= MAX_SIDE):
            raise ValueError(f"{name} must be a multiple of 8 between 8 and {MAX_SIDE} pixels; got {side}.")
    if not 1 <= num_images <= 64:
        raise ValueError(f"num_images must be between 1 and 64; got {num_images}.")


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is JSON-like data (a number, string, bool, None, or a list/tuple of them)."""
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def generate(
    pipe: DiffusionPipeline,
    prompt: str | list[str],
    *,
    seed: int = 0,
    num_images: int = 1,
    negative_prompt: str | list[str] | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    guidance_rescale: float | None = None,
    height: int | None = None,
    width: int | None = None,
    **pipe_kwargs: Any,
) -> Generation:
    """Generate ``num_images`` images per prompt, each with its own seed, reproducibly.

    Image ``i`` uses seed ``seed + i``, so any single image can be made again alone. Settings left as
    ``None`` take the model's published defaults (e.g. 30 steps and guidance rescale 0.7 for DeciDiffusion,
    50 steps for SD v1.x), then the pipeline's own.

    Raises:
        ValueError: empty prompt, or a setting out of range (the message names it and its range).
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("prompt must be a non-empty string or a list of non-empty strings.")
    validate_settings(
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        height=height,
        width=width,
        num_images=num_images,
        guidance_rescale=guidance_rescale,
    )
    settings: dict[str, Any] = dict(default_settings(pipe))
    given = {
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "guidance_rescale": guidance_rescale,
        "height": height,
        "width": width,
        "negative_prompt": negative_prompt,
    }
    settings.update({key: value for key, value in given.items() if value is not None})
    # Only plain values describe a picture (and go into its PNG metadata); callbacks and tensors are passed on.
    settings.update({key: value for key, value in pipe_kwargs.items() if _is_plain(value)})

    all_prompts = [p for p in prompts for _ in range(num_images)]
    seeds = [seed + i for _ in prompts for i in range(num_images)]
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    call_kwargs = {**settings, **pipe_kwargs}
    if isinstance(negative_prompt, str):
        call_kwargs["negative_prompt"] = [negative_prompt] * len(all_prompts)
    elif negative_prompt is not None:
        negatives = list(negative_prompt)
        if len(negatives) != len(prompts):
            raise ValueError(f"Give one negative prompt per prompt ({len(prompts)}); got {len(negatives)}.")
        call_kwargs["negative_prompt"] = [n for n in negatives for _ in range(num_images)]

    start = time.perf_counter()
    output = pipe(prompt=all_prompts, generator=generators, output_type="np", **call_kwargs)
    seconds = time.perf_counter() - start

    arrays = np.asarray(output.images)
    nan = [bool(np.isnan(a).any()) for a in arrays]
    images = pipe.numpy_to_pil(np.nan_to_num(arrays, nan=0.0))
    flags = getattr(output, "nsfw_content_detected", None)
    nsfw: list[bool | None] = [bool(f) for f in flags] if flags is not None else [None] * len(images)
    info = load_info(pipe)
    model = info.label if info is not None else type(pipe).__name__
    return Generation(
        images=images,
        prompts=all_prompts,
        seeds=seeds,
        settings=settings,
        model=model,
        seconds=seconds,
        nsfw=nsfw,
        nan=nan,
        stand_in=info.stand_in if info is not None else None,
    )
