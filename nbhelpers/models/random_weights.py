"""Full-size pipelines with random weights: the real architectures, for timing and memory without the hub.

Random weights cost exactly what real weights cost (same shapes, same kernels); only the pictures differ,
so everything built here is labelled "random weights" and must never be shown as a model result. The
configs are the published ones (``shared/reference/models.md``): SD v1.x UNet (859,520,964 parameters),
small-sd's one-layer-per-block UNet (579,384,964), DeciDiffusion's flexible UNet (814,746,884), the CLIP
ViT-L/14 text tower (123,060,480) and the SD VAE (83,653,863).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from nbhelpers.catalog import get_spec
from nbhelpers.models.deci_pipeline import DeciDiffusionPipeline
from nbhelpers.models.flexible_unet import DECI_FLEXIBLE_UNET_CONFIG, FlexibleUNet2DConditionModel
from nbhelpers.models.tiny import cache_root
from nbhelpers.models.tokenizer import write_clip_tokenizer

SD_V1_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SMALL_SD_UNET_CONFIG: dict[str, Any] = {**SD_V1_UNET_CONFIG, "layers_per_block": 1}
CLIP_VIT_L_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}
SD_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
#: The SD v1.x safety checker: CLIP ViT-L/14 (vision tower 1024 wide, 24 layers, 224 px, patch 14) plus the
#: 768-d projection; only the vision side is kept in the checkpoint (about 304M parameters, 0.6 GB in fp16).
SAFETY_CHECKER_CLIP_CONFIG: dict[str, Any] = {
    "text_config": {**CLIP_VIT_L_TEXT_CONFIG},
    "vision_config": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 224,
        "patch_size": 14,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
    },
    "projection_dim": 768,
}
#: The SD v1.x feature extractor (CLIP image preprocessing at 224 px).
FEATURE_EXTRACTOR_CONFIG: dict[str, Any] = {
    "size": {"shortest_edge": 224},
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}


def build_random_safety_checker() -> torch.nn.Module:
    """The full-size SD v1.x safety checker with random weights (on the current default device)."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    return StableDiffusionSafetyChecker(CLIPConfig(**copy.deepcopy(SAFETY_CHECKER_CLIP_CONFIG)))


def build_random_unet(name: str) -> torch.nn.Module:
    """The full-size UNet of catalog entry ``name`` with random weights (on the current default device)."""
    spec = get_spec(name)
    if spec.unet_kind == "flexible":
        config = {k: v for k, v in copy.deepcopy(DECI_FLEXIBLE_UNET_CONFIG).items() if not k.startswith("_")}
        return FlexibleUNet2DConditionModel(**config)
    return UNet2DConditionModel(**(SMALL_SD_UNET_CONFIG if spec.name == "small-sd-v0" else SD_V1_UNET_CONFIG))


def build_random_pipeline(
    name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> StableDiffusionPipeline:
    """A full-size pipeline of catalog entry ``name`` with random weights, the real tokenizer and scheduler.

    Weights are created directly on ``device`` (fast on a GPU; ``"meta"`` allocates nothing, for counting).
    There is no safety checker. ``pipe.nbhelpers_random_weights`` is ``True``.
    """
    spec = get_spec(name)
    tokenizer_folder = cache_root() / "clip-tokenizer"
    if not (tokenizer_folder / "vocab.json").exists():
        write_clip_tokenizer(tokenizer_folder)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder)
    with torch.device(device):
        unet = build_random_unet(spec.name)
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L_TEXT_CONFIG))
        vae = AutoencoderKL(**SD_VAE_CONFIG)
    scheduler_cls = DDIMScheduler if spec.scheduler_class == "DDIMScheduler" else PNDMScheduler
    pipeline_cls = DeciDiffusionPipeline if spec.unet_kind == "flexible" else StableDiffusionPipeline
    pipe = pipeline_cls(
        vae=vae.to(dtype),
        text_encoder=text_encoder.to(dtype),
        tokenizer=tokenizer,
        unet=unet.to(dtype),
        scheduler=scheduler_cls(**spec.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.nbhelpers_random_weights = True
    return pipe


def _random_text_encoder() -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L_TEXT_CONFIG))


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
    from huggingface_hub import constants

    from nbhelpers.atomic import atomic_folder
    from nbhelpers.catalog import CATALOG
    from nbhelpers.models.tiny import _fake_commit, hub_model_index, hub_snapshot_folder

    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    specs = [get_spec(n) for n in (names or list(CATALOG))]
    parts = cache / f".nbhelpers-random-parts-v{RANDOM_HUB_FORMAT_VERSION}"
    snapshots: dict[str, Path] = {}

    def part(key: str, build, *, fp32: bool, fp16: bool) -> Path:
        folder = parts / key
        if not (folder / "config.json").is_file():
            with atomic_folder(folder) as staging:
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
        unet_model = "small-sd-v0" if spec.name == "small-sd-v0" else "sd-v1-4"  # DeciDiffusion's unet/: SD-shaped
        unet_key = f"{unet_model}-unet"
        components = {
            "text_encoder": part(f"text_encoder-{suffix}", _random_text_encoder, fp32=fp32, fp16=fp16),
            "vae": part(f"vae-{suffix}", lambda: AutoencoderKL(**SD_VAE_CONFIG), fp32=fp32, fp16=fp16),
            "safety_checker": part(f"safety_checker-{suffix}", build_random_safety_checker, fp32=fp32, fp16=fp16),
            "unet": part(f"{unet_key}-{suffix}", partial(build_random_unet, unet_model), fp32=fp32, fp16=fp16),
        }
        if deci:
            components["flexible_unet"] = part("flexible_unet-fp16", partial(build_random_unet, "deci-v1"),
                                               fp32=False, fp16=True)
        with atomic_folder(snapshot) as staging:
            for subfolder, source in components.items():
                _link_tree(source, staging / subfolder)
            scheduler_cls = DDIMScheduler if spec.scheduler_class == "DDIMScheduler" else PNDMScheduler
            scheduler_cls(**spec.scheduler_config).save_pretrained(staging / "scheduler")
            write_clip_tokenizer(staging / "tokenizer")
            CLIPImageProcessor(**FEATURE_EXTRACTOR_CONFIG).save_pretrained(staging / "feature_extractor")
            (staging / "model_index.json").write_text(json.dumps(hub_model_index(spec), indent=2), encoding="utf-8")
    return snapshots
