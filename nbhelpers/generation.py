"""Reproducible generation: seeds per image, validated settings, and telling black images apart."""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from nbhelpers.catalog import get_spec
from nbhelpers.checks import MAX_PROMPT_CHARS, MAX_SEED, PROMPT_LIMIT, real_number, shown, text, whole_number
from nbhelpers.errors import ConfigurationError
from nbhelpers.images import save_image
from nbhelpers.loading import load_info
from nbhelpers.models.configs import DECI_FLEXIBLE_UNET_CONFIG, SD_VAE_CONFIG
from nbhelpers.models.flexible_unet import FlexibleUNet2DConditionModel
from nbhelpers.stand_in import StandIn, stand_in_mark

MAX_STEPS = 1000
MAX_SIDE = 2048
#: Images per :func:`generate` call (prompts x num_images): one batch, so more would only run out of memory.
MAX_IMAGES = 64

#: Pipeline arguments :func:`generate` sets itself, and what to use instead.
_SET_BY_GENERATE = {
    "prompt": "pass the prompt as the second argument",
    "generator": "image j of each prompt gets torch.Generator().manual_seed(seed + j): pass seed=",
    "num_images_per_prompt": "pass num_images=",
    "output_type": "images come back as PIL images",
    "return_dict": "generate() returns a Generation",
}
#: The settings :func:`generate` names itself.
_GENERATE_ARGUMENTS = (
    "seed",
    "num_images",
    "negative_prompt",
    "num_inference_steps",
    "guidance_scale",
    "guidance_rescale",
    "height",
    "width",
)


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
        """Save every image as PNG with its prompt, seed, steps and model in the metadata; return the paths.

        ``stem`` is the start of each file name (``image-000-seed0.png``); it cannot name another folder.
        """
        folder = Path(folder)
        if not isinstance(stem, str) or not stem.strip() or Path(stem).name != stem or stem in (".", ".."):
            raise ConfigurationError(f"stem must be a plain file-name start such as 'image', not {stem!r}.")
        return [
            self.save_one(index, folder / f"{stem}-{index:03d}-seed{seed}.png") for index, seed in enumerate(self.seeds)
        ]

    def save_one(self, index: int, path: str | Path, model: str | None = None) -> Path:
        """Save image ``index`` as the PNG ``path`` with its settings in the metadata (``model`` overrides the
        model label, e.g. to mark a fine-tuned model); return the path."""
        index = whole_number("index", index, 0, len(self.images) - 1)
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


def size_multiple(vae_scale_factor: int, unet_downsamples: int = 0) -> int:
    """The multiple of pixels an image side must be for a pipeline whose VAE shrinks images ``vae_scale_factor``
    times and whose UNet needs latents divisible by ``2**unet_downsamples``.

    diffusers' Stable Diffusion pipelines accept multiples of 8 pixels; diffusers' own UNet pads latents of any
    size, so SD v1.x needs nothing more (``unet_downsamples=0``). DeciDiffusion's flexible UNet does not pad: its
    three downsamplings need latents divisible by 8, i.e. images in multiples of 8 x 8 = 64 pixels.
    """
    return math.lcm(8, vae_scale_factor * 2**unet_downsamples)


def pipeline_size_multiple(pipe: DiffusionPipeline) -> int:
    """The multiple of pixels ``pipe`` needs for height and width (:func:`size_multiple` of its VAE and UNet)."""
    unet = getattr(pipe, "unet", None)
    downsamples = unet.num_downsamplers if isinstance(unet, FlexibleUNet2DConditionModel) else 0
    return size_multiple(int(getattr(pipe, "vae_scale_factor", 8)), downsamples)


def catalog_size_multiple(name: str) -> int:
    """The multiple of pixels the full-size catalog model ``name`` needs, from its published configs (64 for
    DeciDiffusion, 8 for SD v1.x; its stand-ins need the same or less)."""
    vae_scale_factor = 2 ** (len(SD_VAE_CONFIG["block_out_channels"]) - 1)
    if get_spec(name).unet_kind != "flexible":
        return size_multiple(vae_scale_factor)
    return size_multiple(
        vae_scale_factor, sum(map(bool, DECI_FLEXIBLE_UNET_CONFIG["configurations"]["add_downsample"]))
    )


def default_size(pipe: DiffusionPipeline) -> tuple[int, int]:
    """``(height, width)`` in pixels that ``pipe`` generates when given neither (its UNet's sample size)."""
    unet = getattr(pipe, "unet", None)
    if unet is None:
        raise ConfigurationError(
            f"{type(pipe).__name__} has no UNet to take a default size from: give both height and width."
        )
    sample_size = unet.config.sample_size
    height, width = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    return int(height) * scale, int(width) * scale


def _side(name: str, value: Any, multiple: int) -> int:
    top = MAX_SIDE - MAX_SIDE % multiple
    try:
        side: int | None = whole_number(name, value, multiple, top)
    except ConfigurationError:  # one message for every way a side can be wrong: it says what to pass
        side = None
    if side is None or side % multiple:
        raise ConfigurationError(
            f"{name} must be a multiple of {multiple} between {multiple} and {top} pixels (SD v1.x takes "
            f"multiples of 8, DeciDiffusion of 64); got {shown(value)}."
        )
    return side


def validate_settings(
    *,
    num_inference_steps: Any,
    guidance_scale: Any,
    height: Any,
    width: Any,
    num_images: Any,
    guidance_rescale: Any = None,
    seed: Any = 0,
    num_prompts: int = 1,
    multiple: int = 8,
) -> dict[str, Any]:
    """Check the types and ranges of generation settings; return them normalised (``None`` for settings not given).

    Whole numbers (steps, size, images, seed) must be ints; a whole-valued float such as ``30.0`` counts as ``30``
    and a ``bool`` is refused. Sides must be multiples of ``multiple`` pixels (8 for SD v1.x, 64 for DeciDiffusion:
    :func:`pipeline_size_multiple`). Image ``j`` of each prompt uses seed ``seed + j``; every one of them must be a
    valid ``torch.Generator`` seed (0 to 2**64 - 1).

    Raises:
        ConfigurationError: (a ``ValueError``) naming the setting, its allowed range and the value given.
    """
    images = whole_number("num_images", num_images, 1, MAX_IMAGES)
    if images * num_prompts > MAX_IMAGES:
        raise ConfigurationError(
            f"{num_prompts} prompts x num_images={images} is {images * num_prompts} images in one call; at most "
            f"{MAX_IMAGES} are made at once (call generate() once per prompt for more)."
        )
    return {
        "num_images": images,
        "seed": whole_number("seed", seed, 0, MAX_SEED - (images - 1)),
        "num_inference_steps": None
        if num_inference_steps is None
        else whole_number("num_inference_steps", num_inference_steps, 1, MAX_STEPS),
        "guidance_scale": None
        if guidance_scale is None
        else real_number("guidance_scale", guidance_scale, 0, 50, hint="guidance is on above 1"),
        "guidance_rescale": None
        if guidance_rescale is None
        else real_number("guidance_rescale", guidance_rescale, 0, 1),
        "height": None if height is None else _side("height", height, multiple),
        "width": None if width is None else _side("width", width, multiple),
    }


def check_prompts(name: str, value: Any) -> list[str]:
    """``value`` (one prompt or a list) as a list of prompts, each a non-empty string of at most 2,000 characters.

    Raises:
        ConfigurationError: naming the prompt at fault (``prompt[3]``) and what was wrong.
    """
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigurationError(f"{name} must be a non-empty string or a list of non-empty strings; got {value!r}.")
    return [
        text(f"{name}[{i}]" if len(values) > 1 else name, v, max_chars=MAX_PROMPT_CHARS, why=PROMPT_LIMIT)
        for i, v in enumerate(values)
    ]


def pipeline_arguments(pipe: DiffusionPipeline) -> set[str]:
    """The keyword arguments ``pipe(...)`` names in its ``__call__`` signature (and its parents', where a
    subclass passes ``**kwargs`` on, as :class:`~nbhelpers.models.deci_pipeline.DeciDiffusionPipeline` does)."""
    names: set[str] = set()
    for cls in type(pipe).__mro__:
        call = cls.__dict__.get("__call__")
        if call is None:
            continue
        parameters = inspect.signature(call).parameters.values()
        names.update(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    names.discard("self")
    return names


def _check_pipe_kwargs(pipe: DiffusionPipeline, pipe_kwargs: dict[str, Any]) -> None:
    """Refuse keywords ``pipe`` does not take and those :func:`generate` sets itself, naming what it takes."""
    own = [name for name in pipe_kwargs if name in _SET_BY_GENERATE]
    if own:
        raise ConfigurationError(
            f"generate() sets {', '.join(own)} itself ({'; '.join(_SET_BY_GENERATE[n] for n in own)})."
        )
    accepted = pipeline_arguments(pipe)
    unknown = sorted(name for name in pipe_kwargs if name not in accepted)
    if unknown:
        others = sorted(accepted - set(_SET_BY_GENERATE) - set(_GENERATE_ARGUMENTS))
        raise ConfigurationError(
            f"generate() got unknown keyword(s) {', '.join(unknown)}. It takes {', '.join(_GENERATE_ARGUMENTS)} "
            f"and these {type(pipe).__name__} arguments: {', '.join(others)}."
        )
    for name, value in pipe_kwargs.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigurationError(f"{name} must be a finite number; got {value}.")


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

    Image ``j`` of each prompt uses seed ``seed + j`` (every prompt starts at ``seed``: a prompt's pictures do
    not change when other prompts are added), so any single image can be made again alone. Settings left as
    ``None`` take the model's published defaults (e.g. 30 steps and guidance rescale 0.7 for DeciDiffusion,
    50 steps for SD v1.x), then the pipeline's own. A height or width given alone gets the model's default for
    the other side (diffusers would otherwise ignore it and make the default size); both are then recorded.

    Args:
        pipe: a pipeline from :func:`~nbhelpers.loading.load_pipeline` (or any diffusers text-to-image pipeline).
        prompt: one prompt or a list (each at most 2,000 characters; the text encoder reads 77 tokens).
        seed: seed of each prompt's first image, 0 to 2**64 - 1.
        num_images: images per prompt, 1 to 64 (and at most 64 in all).
        negative_prompt: one for all prompts, or one per prompt.
        num_inference_steps: 1 to 1000 (a whole number; ``30.0`` counts as 30).
        guidance_scale: 0 to 50. guidance_rescale: 0 to 1.
        height, width: pixels, multiples of :func:`pipeline_size_multiple` (8 for SD v1.x, 64 for DeciDiffusion).
        **pipe_kwargs: other arguments of the pipeline's ``__call__`` (``eta``, ``callback_on_step_end``, ...);
            any other keyword is refused. Plain values (numbers, strings) are recorded in the settings and the PNG
            metadata; callbacks and tensors are passed on only.

    Raises:
        ConfigurationError: (a ``ValueError``) an empty or over-long prompt, a setting of the wrong type or out of
            range, or an unknown keyword; the message names it and what to pass instead.
    """
    if not isinstance(pipe, DiffusionPipeline):
        raise ConfigurationError(
            f"generate() takes a pipeline as its first argument (pipe = load_pipeline('deci-v1')); got {pipe!r:.60}."
        )
    prompts = check_prompts("prompt", prompt)
    negatives = None if negative_prompt is None else check_prompts("negative_prompt", negative_prompt)
    if negatives is not None and not isinstance(negative_prompt, str) and len(negatives) != len(prompts):
        raise ConfigurationError(f"Give one negative prompt per prompt ({len(prompts)}); got {len(negatives)}.")
    _check_pipe_kwargs(pipe, pipe_kwargs)
    checked = validate_settings(
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        height=height,
        width=width,
        num_images=num_images,
        guidance_rescale=guidance_rescale,
        seed=seed,
        num_prompts=len(prompts),
        multiple=pipeline_size_multiple(pipe),
    )
    if (checked["height"] is None) != (checked["width"] is None):
        default_height, default_width = default_size(pipe)
        checked["height"] = checked["height"] or default_height
        checked["width"] = checked["width"] or default_width
    num_images, seed = checked.pop("num_images"), checked.pop("seed")
    settings: dict[str, Any] = dict(default_settings(pipe))
    settings.update({key: value for key, value in checked.items() if value is not None})
    if negative_prompt is not None:
        settings["negative_prompt"] = negative_prompt
    # Only plain values describe a picture (and go into its PNG metadata); callbacks and tensors are passed on.
    settings.update({key: value for key, value in pipe_kwargs.items() if _is_plain(value)})

    all_prompts = [p for p in prompts for _ in range(num_images)]
    seeds = [seed + i for _ in prompts for i in range(num_images)]
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    call_kwargs = {**settings, **pipe_kwargs}
    if negatives is not None:
        per_prompt = negatives * len(prompts) if isinstance(negative_prompt, str) else negatives
        call_kwargs["negative_prompt"] = [n for n in per_prompt for _ in range(num_images)]

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
