"""Full-size pipelines with random weights: the real architectures, for timing and memory without the hub.

Random weights cost exactly what real weights cost (same shapes, same kernels); only the pictures differ,
so everything built here is labelled "random weights" and must never be shown as a model result. The
configs are the published ones (``shared/reference/models.md``): SD v1.x UNet (859,520,964 parameters),
small-sd's one-layer-per-block UNet (579,384,964), DeciDiffusion's flexible UNet (814,746,884), the CLIP
ViT-L/14 text tower (123,060,480) and the SD VAE (83,653,863).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

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
