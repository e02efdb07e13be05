"""Few-step fast paths for SD v1.x: a distilled LoRA, the scheduler it was distilled for, its authors' settings.

``load_pipeline("sd-v1-5", fast_path="lcm-lora")``, or ``apply_fast_path(pipe, "lcm-lora")`` on a loaded pipeline,
does what each adapter's model card does, with diffusers' own API and no remote code: ``load_lora_weights``,
``fuse_lora`` (then ``unload_lora_weights``, so the fused UNet runs without LoRA layers in the way), and the
scheduler swapped ``from_config``. The authors' step count and guidance (:data:`FAST_PATHS`) become the pipeline's
generation defaults (:func:`nbhelpers.generation.generate` reads them), so ``generate(pipe, prompt)`` makes what
the card makes. Whether the few steps keep the quality is measured, not assumed: notebook 02 and
``docs/quality.md``.

The adapters were distilled from SD v1.5's UNet and change its attention and resnet layers by name: they fit
every UNet with SD v1.x's layout (SD v1.4, v1.5 and their fine-tunes) and no other. DeciDiffusion's flexible UNet
keeps its layers under other names and shapes (``modules_list``, no attention at 64x64), so applying one raises a
:class:`FastPathError` that says so (:func:`check_adapter_fits`). The toy stand-ins have no such adapter; the tiny
stand-in gets random-weight LoRA files in the real files' layout (:mod:`nbhelpers.perf.fast_path_loras`), so the
code path runs offline.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
from diffusers import DDIMScheduler, LCMScheduler, TCDScheduler
from huggingface_hub import try_to_load_from_cache

from nbhelpers.errors import ConfigurationError
from nbhelpers.models.configs import sd_unet_config

#: The layers the adapters change, by the end of their name in a diffusers ``UNet2DConditionModel``: the default
#: ``lora_target_modules`` of diffusers' LCM-LoRA distillation script
#: (examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py): attention and feed-forward projections,
#: the resnets' convolutions and time projections, down- and upsampling convolutions.
ADAPTER_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
    "time_emb_proj",
)
_BLOCKS = ("down_blocks.", "mid_block.", "up_blocks.")
_SCHEDULERS: dict[str, Any] = {
    "LCMScheduler": LCMScheduler,
    "TCDScheduler": TCDScheduler,
    "DDIMScheduler": DDIMScheduler,
}


class FastPathError(ConfigurationError):
    """A fast path that cannot apply here (unknown name, a UNet it does not fit, a file not downloaded)."""


@dataclass(frozen=True)
class FastPath:
    """One few-step adapter with its authors' settings.

    Attributes:
        name: the short name ``fast_path=`` takes.
        title: how tables and charts name it.
        repo_id, weight_name: the hub repository and the LoRA file in it.
        scheduler: the diffusers scheduler class the authors sample with, built ``from_config`` of the pipeline's
            (so SD's betas carry over) with ``scheduler_options``.
        num_inference_steps, guidance_scale: the authors' settings, used as generation defaults (a guidance scale
            of 1 or less turns classifier-free guidance off: one UNet pass per step instead of two).
        call_options: further pipeline arguments of the authors' example (TCD's ``eta``).
        published: the range the authors give, in words.
        source: where the settings come from.
    """

    name: str
    title: str
    repo_id: str
    weight_name: str
    scheduler: str
    num_inference_steps: int
    guidance_scale: float
    published: str
    source: str
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    call_options: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_guidance(self) -> bool:
        """Whether classifier-free guidance is on (diffusers runs it above a guidance scale of 1)."""
        return self.guidance_scale > 1

    @property
    def unet_passes(self) -> int:
        """UNet evaluations per image: steps, times two with guidance."""
        return self.num_inference_steps * (2 if self.uses_guidance else 1)

    def generation_defaults(self) -> dict[str, Any]:
        """The pipeline arguments of the authors' example: steps, guidance and any extra (``eta``)."""
        return {
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            **self.call_options,
        }

    def row(self) -> dict[str, Any]:
        """One row for a table of the fast paths (``pandas.DataFrame([p.row() for p in FAST_PATHS.values()])``)."""
        options = ", ".join(f"{k}={v!r}" for k, v in self.scheduler_options.items())
        return {
            "fast path": self.name,
            "adapter": f"{self.repo_id} ({self.weight_name})",
            "scheduler": f"{self.scheduler}({options})" if options else self.scheduler,
            "steps": self.num_inference_steps,
            "guidance": self.guidance_scale,
            "other": ", ".join(f"{k}={v}" for k, v in self.call_options.items()),
            "UNet passes per image": self.unet_passes,
            "authors' range": self.published,
            "source": self.source,
        }


#: The few-step fast paths for SD v1.x, with the settings their model cards publish.
FAST_PATHS: dict[str, FastPath] = {
    path.name: path
    for path in (
        FastPath(
            name="lcm-lora",
            title="LCM-LoRA",
            repo_id="latent-consistency/lcm-lora-sdv1-5",
            weight_name="pytorch_lora_weights.safetensors",
            scheduler="LCMScheduler",
            num_inference_steps=4,
            guidance_scale=0.0,
            published="2-8 steps; guidance off (0) or 1-2",
            source="https://huggingface.co/latent-consistency/lcm-lora-sdv1-5",
        ),
        FastPath(
            name="hyper-sd-cfg",
            title="Hyper-SD CFG",
            repo_id="ByteDance/Hyper-SD",
            weight_name="Hyper-SD15-8steps-CFG-lora.safetensors",
            scheduler="DDIMScheduler",
            scheduler_options={"timestep_spacing": "trailing"},
            num_inference_steps=8,
            guidance_scale=5.0,
            published="8 steps; guidance 5-8 (negative prompts work); DDIM with trailing timesteps",
            source="https://huggingface.co/ByteDance/Hyper-SD",
        ),
        FastPath(
            name="tcd-lora",
            title="TCD-LoRA",
            repo_id="h1t/TCD-SD15-LoRA",
            weight_name="pytorch_lora_weights.safetensors",
            scheduler="TCDScheduler",
            num_inference_steps=4,
            guidance_scale=0.0,
            call_options={"eta": 0.3},
            published="4 steps, guidance 0, eta 0.3 (a higher eta for more steps)",
            source="https://huggingface.co/h1t/TCD-SD15-LoRA",
        ),
    )
}


def get_fast_path(name: str) -> FastPath:
    """The :class:`FastPath` called ``name``; a :class:`FastPathError` naming the known ones otherwise."""
    key = str(name).strip().lower()
    if key not in FAST_PATHS:
        raise FastPathError(f"Unknown fast path {name!r}; choose one of {', '.join(FAST_PATHS)}.")
    return FAST_PATHS[key]


def fast_path_of(pipe: Any) -> FastPath | None:
    """The fast path applied to ``pipe`` (``None`` for a plain pipeline)."""
    return getattr(pipe, "nbhelpers_fast_path", None)


def adapter_layers(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The layers of ``unet`` the adapters change (see :data:`ADAPTER_TARGETS`), by name."""
    return {
        name: module
        for name, module in unet.named_modules()
        if name.startswith(_BLOCKS)
        and name.endswith(ADAPTER_TARGETS)
        and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))
    }


@cache
def sd_adapter_layer_names() -> frozenset[str]:
    """The names of the layers the adapters change in SD v1.x's UNet (built on the meta device), except the resnets'
    ``conv_shortcut``: whether a resnet has one depends on the widths, not on the layout."""
    # Lazy: diffusers' UNet class loads its LoRA loaders and transformers (seconds); the schedulers above do not.
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        reference = UNet2DConditionModel(**sd_unet_config(2))
    return frozenset(name for name in adapter_layers(reference) if not name.endswith("conv_shortcut"))


def check_adapter_fits(unet: torch.nn.Module, fast_path: FastPath | str = "lcm-lora") -> None:
    """Raise a :class:`FastPathError` saying why when ``unet`` lacks layers an SD v1.x adapter changes.

    The check is by layer name against SD v1.x's UNet (the adapters' keys name those layers); shapes are checked by
    diffusers when the weights load.
    """
    path = fast_path if isinstance(fast_path, FastPath) else get_fast_path(fast_path)
    expected = sd_adapter_layer_names()
    present = {name for name, module in unet.named_modules() if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))}
    missing = sorted(expected - present)
    if not missing:
        return
    kind = type(unet).__name__
    why = (
        "DeciDiffusion's flexible UNet names and shapes its layers differently (each block keeps them in one "
        "`modules_list`, and it has no attention at 64x64), so no adapter distilled from SD v1.5 fits it"
        if kind == "FlexibleUNet2DConditionModel"
        else "its blocks differ from SD v1.x's (layers per block, block types)"
    )
    raise FastPathError(
        f"{path.title} ({path.repo_id}) was distilled for SD v1.5's UNet: {len(missing)} of the {len(expected)} "
        f"layers it changes do not exist in this {kind} (e.g. {missing[0]}): {why}. Fast paths fit SD v1.4 and "
        "v1.5 (and fine-tunes of them); load one of those, or leave fast_path out."
    )


class _DropTextEncoderNotice(logging.Filter):
    """diffusers notes that an adapter has no text-encoder weights; these adapters never have any."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No LoRA keys associated to CLIPTextModel" not in record.getMessage()


@contextmanager
def _quiet_text_encoder_notice() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("diffusers.loaders.lora_base", "diffusers.loaders.lora_pipeline")]
    notice = _DropTextEncoderNotice()
    for logger in loggers:
        logger.addFilter(notice)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(notice)


def _lora_source(path: FastPath, stand_in: str | None, source: str | os.PathLike[str] | None) -> str:
    if source is not None:
        return str(source)
    if stand_in == "tiny":
        # Lazy: fast_path_loras imports this module (cycle).
        from nbhelpers.perf.fast_path_loras import tiny_fast_path_folder

        return str(tiny_fast_path_folder(path.name))
    return path.repo_id


def _load_and_fuse(pipe: Any, path: FastPath, source: str, hub_kwargs: dict[str, Any]) -> None:
    try:
        with _quiet_text_encoder_notice():
            pipe.load_lora_weights(source, weight_name=path.weight_name, adapter_name=path.name, **hub_kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        local = os.path.isdir(source)
        where = f"the folder {source}" if local else f"{source} on the Hugging Face hub or in its local cache"
        hint = (
            f"Put {path.weight_name} in that folder."
            if local
            else f"Download it once where you have access (`hf download {path.repo_id} {path.weight_name}`), then "
            "it loads offline (HF_HUB_OFFLINE=1); or pass source= a folder that holds the file."
        )
        raise FastPathError(
            f"Could not load the {path.title} adapter {path.weight_name} from {where}: {err}\n{hint}"
        ) from err
    # Fused, then the LoRA layers removed (diffusers' "fuse, then unload" recipe): the UNet keeps the fused
    # weights and runs as fast as a plain one (unfused LoRA layers cost time every step, and block torch.compile
    # and fused QKV projections).
    pipe.fuse_lora(adapter_names=[path.name])
    pipe.unload_lora_weights()


def _refuse_toy(path: FastPath, stand_in: str | None) -> None:
    if stand_in == "toy":
        raise FastPathError(
            f"No few-step adapter exists for the toy stand-ins: {path.title} was distilled from SD v1.5's 860M-"
            "parameter UNet. Use stand_in='tiny' to run the fast path's code offline (random weights), or the real "
            "model."
        )


def check_fast_path_for(name: str, spec: Any, stand_in: str | None) -> FastPath:
    """Refuse fast path ``name`` for catalog entry ``spec`` before anything downloads (unknown name, a toy stand-in,
    a UNet layout the adapter does not fit, checked on the meta device); return the :class:`FastPath`."""
    path = get_fast_path(name)
    _refuse_toy(path, stand_in)
    if spec is not None:
        # Lazy: models.components imports transformers, which checking a fast path's name never needs.
        from nbhelpers.models.components import build_unet

        with torch.device("meta"):
            check_adapter_fits(build_unet(spec), path)
    return path


_FROM_PIPE: Any = object()


def apply_fast_path(
    pipe: Any,
    name: str,
    *,
    stand_in: str | None = _FROM_PIPE,
    source: str | os.PathLike[str] | None = None,
    **hub_kwargs: Any,
) -> Any:
    """Turn an SD v1.x pipeline into the few-step fast path ``name`` (see :data:`FAST_PATHS`), in place.

    Loads the adapter with ``pipe.load_lora_weights``, fuses it into the UNet, swaps in its scheduler and makes its
    authors' steps and guidance the generation defaults (``pipe.nbhelpers_fast_path``); ``pipe.nbhelpers_info``
    (from :func:`nbhelpers.loading.load_pipeline`) then names it. Apply it before ``optimize`` modes that fuse QKV
    projections or compile.

    Args:
        pipe: a diffusers pipeline with an SD v1.x UNet.
        name: ``"lcm-lora"``, ``"hyper-sd-cfg"`` or ``"tcd-lora"``.
        stand_in: the pipeline's stand-in (default: read from ``pipe.nbhelpers_info``); ``"tiny"`` loads random-weight
            LoRA files in the real layout, ``"toy"`` raises (no adapter exists for the toy models).
        source: a hub id or a local folder holding the adapter file, instead of the authors' repository.
        **hub_kwargs: passed to ``load_lora_weights`` (``cache_dir``, ``revision``, ``token``, ``local_files_only``).

    Returns:
        ``pipe``.

    Raises:
        FastPathError: unknown name; a UNet the adapter does not fit (DeciDiffusion, small-sd); a toy stand-in; a
            pipeline already optimised or given another fast path; the file missing offline.
    """
    path = get_fast_path(name)
    applied = fast_path_of(pipe)
    if applied is not None:
        if applied.name == path.name:
            return pipe
        raise FastPathError(f"The pipeline already runs the {applied.name} fast path; load it again for {path.name}.")
    optimised = getattr(pipe, "nbhelpers_optimize", "none")
    if optimised not in ("none", "channels_last"):
        raise FastPathError(
            f"The pipeline is already optimised with {optimised!r}; apply the fast path first "
            f"(load_pipeline(..., fast_path={path.name!r}, optimize={optimised!r}) does it in that order)."
        )
    info = getattr(pipe, "nbhelpers_info", None)
    if stand_in is _FROM_PIPE:
        stand_in = info.stand_in if info is not None else None
    _refuse_toy(path, stand_in)
    check_adapter_fits(pipe.unet, path)
    _load_and_fuse(pipe, path, _lora_source(path, stand_in, source), hub_kwargs)
    pipe.scheduler = _SCHEDULERS[path.scheduler].from_config(pipe.scheduler.config, **path.scheduler_options)
    pipe.nbhelpers_fast_path = path
    if info is not None and getattr(info, "fast_path", None) != path.name:
        pipe.nbhelpers_info = dataclasses.replace(info, fast_path=path.name)
    return pipe


def fast_path_downloaded(name: str, **hub_kwargs: Any) -> bool:
    """Whether the adapter file of fast path ``name`` is in the local Hugging Face cache (so it loads offline)."""

    path = get_fast_path(name)
    found = try_to_load_from_cache(path.repo_id, path.weight_name, **hub_kwargs)
    return isinstance(found, str)
