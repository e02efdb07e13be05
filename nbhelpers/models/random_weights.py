"""Full-size pipelines with random weights: the real architectures, for timing and memory without the hub.

Random weights cost exactly what real weights cost (same shapes, same kernels); only the pictures differ,
so everything built here is labelled "random weights" and must never be shown as a model result. The
configs are the published ones (see :mod:`nbhelpers.models.configs`): SD v1.x UNet (859,520,964 parameters),
small-sd's one-layer-per-block UNet (579,384,964), DeciDiffusion's flexible UNet (814,746,884), the CLIP
ViT-L/14 text tower (123,060,480) and the SD VAE (83,653,863).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline
from transformers import CLIPTextConfig, CLIPTextModel

from nbhelpers.catalog import get_spec
from nbhelpers.models.components import build_scheduler, build_unet, pipeline_class
from nbhelpers.models.configs import CLIP_VIT_L_TEXT_CONFIG, SD_VAE_CONFIG
from nbhelpers.models.tiny import cache_root
from nbhelpers.models.tokenizer import load_clip_tokenizer


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
