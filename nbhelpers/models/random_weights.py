"""Full-size pipelines with random weights: the real architectures, for timing and memory without the hub.

Random weights cost exactly what real weights cost (same shapes, same kernels); only the pictures differ,
so everything built here is labelled "random weights" and must never be shown as a model result. The
configs are the published ones (see :mod:`nbhelpers.models.configs`): SD v1.x UNet (859,520,964 parameters),
small-sd's one-layer-per-block UNet (579,384,964), DeciDiffusion's flexible UNet (814,746,884), the CLIP
ViT-L/14 text tower (123,060,480) and the SD VAE (83,653,863).
"""

from __future__ import annotations

import json
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from huggingface_hub import constants
from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

from nbhelpers.atomic import atomic_folder
from nbhelpers.catalog import CATALOG, get_spec
from nbhelpers.models.components import build_scheduler, build_unet, pipeline_class
from nbhelpers.models.configs import (
    CLIP_VIT_L_TEXT_CONFIG,
    FEATURE_EXTRACTOR_CONFIG,
    SAFETY_CHECKER_CLIP_CONFIG,
    SD_VAE_CONFIG,
    sd_unet_config,
)
from nbhelpers.models.tiny import _fake_commit, cache_root, hub_model_index, hub_snapshot_folder
from nbhelpers.models.tokenizer import load_clip_tokenizer, write_clip_tokenizer


def build_random_safety_checker() -> torch.nn.Module:
    """The full-size SD v1.x safety checker with random weights (on the current default device)."""

    return StableDiffusionSafetyChecker(CLIPConfig(**SAFETY_CHECKER_CLIP_CONFIG))


def build_random_unet(name: str) -> torch.nn.Module:
    """The full-size UNet of catalog entry ``name`` with random weights (on the current default device)."""
    return build_unet(get_spec(name))


def build_random_pipeline(
    name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> StableDiffusionPipeline:
    """A full-size pipeline of catalog entry ``name`` with random weights, the real tokenizer and scheduler.

    Weights are created directly on ``device`` (fast on a GPU; ``"meta"`` allocates nothing, for counting).
    There is no safety checker. ``pipe.nbhelpers_random_weights`` is ``True``.
    """
    spec = get_spec(name)
    tokenizer = load_clip_tokenizer(cache_root() / "clip-tokenizer")
    with torch.device(device):
        unet = build_random_unet(spec.name)
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L_TEXT_CONFIG))
        vae = AutoencoderKL(**SD_VAE_CONFIG)
    pipe = pipeline_class(spec)(
        vae=vae.to(dtype),
        text_encoder=text_encoder.to(dtype),
        tokenizer=tokenizer,
        unet=unet.to(dtype),
        scheduler=build_scheduler(spec),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.nbhelpers_random_weights = True
    return pipe


def _random_text_encoder() -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L_TEXT_CONFIG))


def _random_sd_unet(layers_per_block: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(**sd_unet_config(layers_per_block))


#: Bump when the layout written by :func:`populate_random_hf_cache` changes.
RANDOM_HUB_FORMAT_VERSION = 1


def _save_component(model: Any, folder: Path, *, fp32: bool, fp16: bool) -> None:
    """``save_pretrained`` into ``folder``: the plain file in fp32 and/or the ``fp16`` variant (or, with
    ``fp32=False``, the plain file in fp16, as DeciDiffusion's repo stores its weights)."""
    if fp32:
        model.to(torch.float32).save_pretrained(folder, safe_serialization=True)
    if fp16:
        variant = "fp16" if fp32 else None
        model.to(torch.float16).save_pretrained(folder, safe_serialization=True, variant=variant)
    model.to(torch.float32)


def _link_tree(source: Path, target: Path) -> None:
    """Copy the folder ``source`` to ``target`` with hard links (no second copy of the weight bytes)."""
    shutil.copytree(source, target, copy_function=os.link)


def populate_random_hf_cache(
    names: list[str] | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> dict[str, Path]:
    """Write full-size random-weight checkpoints into a Hugging Face hub cache under the real repo ids.

    The layout is the hub repos': ``model_index.json``, ``scheduler/``, ``tokenizer/``, ``feature_extractor/``,
    ``safety_checker/``, ``text_encoder/``, ``vae/`` and ``unet/``. SD v1.4 and v1.5 hold the fp32 weights plus the
    ``fp16`` variant files; small-sd fp32 only; DeciDiffusion its fp16 weights under plain names plus
    ``flexible_unet/`` (the denoiser the loader uses; its ``unet/`` is the SD-shaped one nobody should load).
    Components with the same architecture share their bytes through hard links (random weights either way), so
    all four models take about 12 GB. A model already present (same format version) is kept.

    Returns ``{catalog name: snapshot folder}``.
    """

    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    specs = [get_spec(n) for n in (names or list(CATALOG))]
    parts = cache / f".nbhelpers-random-parts-v{RANDOM_HUB_FORMAT_VERSION}"
    snapshots: dict[str, Path] = {}

    def part(key: str, build, *, fp32: bool, fp16: bool) -> Path:
        folder = parts / key
        if not (folder / "config.json").is_file():
            with atomic_folder(folder, keep_existing=True) as staging:
                _save_component(build(), staging, fp32=fp32, fp16=fp16)
        return folder

    for spec in specs:
        snapshot = hub_snapshot_folder(cache, spec, _fake_commit(spec, "random", RANDOM_HUB_FORMAT_VERSION))
        snapshots[spec.name] = snapshot
        if (snapshot / "model_index.json").is_file():
            continue
        deci = spec.unet_kind == "flexible"
        fp32, fp16 = not deci, deci or spec.fp16_variant
        suffix = "fp16" if deci else ("fp32+fp16" if fp16 else "fp32")
        # DeciDiffusion's repo also holds an SD-shaped unet/ that nothing loads; it is written the same way.
        layers = spec.layers_per_block
        unet_key = f"sd-unet-{layers}-layers"
        components = {
            "text_encoder": part(f"text_encoder-{suffix}", _random_text_encoder, fp32=fp32, fp16=fp16),
            "vae": part(f"vae-{suffix}", lambda: AutoencoderKL(**SD_VAE_CONFIG), fp32=fp32, fp16=fp16),
            "safety_checker": part(f"safety_checker-{suffix}", build_random_safety_checker, fp32=fp32, fp16=fp16),
            "unet": part(f"{unet_key}-{suffix}", partial(_random_sd_unet, layers), fp32=fp32, fp16=fp16),
        }
        if deci:
            components["flexible_unet"] = part(
                "flexible_unet-fp16", partial(build_random_unet, "deci-v1"), fp32=False, fp16=True
            )
        with atomic_folder(snapshot, keep_existing=True) as staging:
            for subfolder, source in components.items():
                _link_tree(source, staging / subfolder)
            build_scheduler(spec).save_pretrained(staging / "scheduler")
            write_clip_tokenizer(staging / "tokenizer")
            CLIPImageProcessor(**FEATURE_EXTRACTOR_CONFIG).save_pretrained(staging / "feature_extractor")
            (staging / "model_index.json").write_text(json.dumps(hub_model_index(spec), indent=2), encoding="utf-8")
    return snapshots
