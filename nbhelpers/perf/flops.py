"""Parameters per component and FLOPs per denoising step, counted on the meta device (no memory, no time)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from nbhelpers.catalog import get_spec
from nbhelpers.models.random_weights import build_random_unet


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def component_parameters(pipe: Any) -> dict[str, int]:
    """Parameters of each neural component of a pipeline (unet, text_encoder, vae, safety_checker)."""
    components = {}
    for name in ("unet", "text_encoder", "vae", "safety_checker"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            components[name] = count_parameters(module)
    return components


def unet_step_flops(
    unet: torch.nn.Module,
    *,
    height: int = 512,
    width: int = 512,
    batch_size: int = 1,
    guidance: bool = True,
    vae_scale_factor: int = 8,
    text_length: int = 77,
) -> int:
    """FLOPs of one denoising step of ``unet`` (multiply-adds count 2), for ``batch_size`` images.

    With ``guidance`` the UNet sees a batch of ``2 * batch_size`` (conditional and unconditional). The
    count runs on meta-device copies of the inputs; for a UNet on the meta device it costs no memory.
    """
    config = unet.config
    rows = batch_size * (2 if guidance else 1)
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    with torch.device(device):
        latent_h, latent_w = height // vae_scale_factor, width // vae_scale_factor
        sample = torch.empty(rows, config.in_channels, latent_h, latent_w, dtype=dtype)
        context = torch.empty(rows, text_length, config.cross_attention_dim, dtype=dtype)
        timestep = torch.full((rows,), 999, dtype=torch.long)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(sample, timestep, context)
    return int(counter.get_total_flops())


def model_step_flops(name: str, *, height: int = 512, width: int = 512, batch_size: int = 1) -> int:
    """FLOPs of one guided denoising step of catalog model ``name``'s full-size UNet (built on meta)."""
    get_spec(name)
    with torch.device("meta"):
        unet = build_random_unet(name)
    return unet_step_flops(unet, height=height, width=width, batch_size=batch_size)


def full_size_parameters(name: str) -> int:
    """UNet parameters of catalog model ``name`` at full size (counted on meta)."""
    with torch.device("meta"):
        return count_parameters(build_random_unet(name))
