"""Parameters per component and FLOPs per denoising step, counted on the meta device (no memory, no time), in all
and by resolution level (:func:`unet_work_by_level`: where a UNet spends its step)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.upsampling import Upsample2D
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel

from nbhelpers.catalog import get_spec
from nbhelpers.models.configs import CLIP_VIT_L_TEXT_CONFIG, SD_VAE_CONFIG
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
    config: Any = unet.config
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


#: Layer kinds of :func:`unet_work_by_level`.
ATTENTION, CONVOLUTION, TIME_EMBEDDING = "attention", "convolution", "time embedding"


def _work_units(unet: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, str]]:
    """The UNet's blocks of work by name, each with its kind: attention (a whole ``Transformer2DModel``: norm,
    projections, self- and cross-attention, feed-forward), convolution (resnets, down- and upsampling, conv_in and
    the output layers) and the time embedding."""

    units: dict[str, tuple[torch.nn.Module, str]] = {}
    for name, module in unet.named_modules():
        if any(name.startswith(f"{outer}.") for outer in units):
            continue  # inside a unit already counted
        if isinstance(module, Transformer2DModel):
            units[name] = (module, ATTENTION)
        elif isinstance(module, (ResnetBlock2D, Downsample2D, Upsample2D)) or name in (
            "conv_in",
            "conv_norm_out",
            "conv_out",
        ):
            units[name] = (module, CONVOLUTION)
        elif name == "time_embedding":
            units[name] = (module, TIME_EMBEDDING)
    return units


def unet_work_by_level(
    unet: torch.nn.Module, *, height: int = 512, width: int = 512, batch_size: int = 1, guidance: bool = True
) -> list[dict[str, Any]]:
    """Parameters and FLOPs of one denoising step of ``unet``, by resolution level and layer kind.

    Each block of work (:func:`_work_units`) is put at the resolution of the latents it outputs (``"64x64"`` for a
    512 px image; a downsampler's convolution runs at the smaller size, an upsampler's at the larger); the time
    embedding has no resolution (level ``"-"``). Rows: ``{"level", "kind", "parameters", "flops"}``, largest level
    first; the parameters add up to the UNet's and the FLOPs to :func:`unet_step_flops`.
    """
    units = _work_units(unet)
    levels: dict[str, str] = {}

    def record(name: str) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            tensor = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
            levels[name] = f"{tensor.shape[-2]}x{tensor.shape[-1]}" if tensor.dim() == 4 else "-"

        return hook

    handles = [module.register_forward_hook(record(name)) for name, (module, _) in units.items()]
    config: Any = unet.config
    rows = batch_size * (2 if guidance else 1)
    parameter = next(unet.parameters())
    with torch.device(parameter.device):
        sample = torch.empty(rows, config.in_channels, height // 8, width // 8, dtype=parameter.dtype)
        context = torch.empty(rows, 77, config.cross_attention_dim, dtype=parameter.dtype)
        timestep = torch.full((rows,), 999, dtype=torch.long)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            unet(sample, timestep, context)
    finally:
        for handle in handles:
            handle.remove()
    by_module = counter.get_flop_counts()
    root = type(unet).__name__
    totals: dict[tuple[str, str], dict[str, int]] = {}
    for name, (module, kind) in units.items():
        entry = totals.setdefault((levels.get(name, "-"), kind), {"parameters": 0, "flops": 0})
        entry["parameters"] += count_parameters(module)
        entry["flops"] += int(sum(by_module.get(f"{root}.{name}", {}).values()))

    def size(level: str) -> int:
        return int(level.split("x")[0]) if "x" in level else 0

    return [
        {"level": level, "kind": kind, **figures}
        for (level, kind), figures in sorted(totals.items(), key=lambda item: (-size(item[0][0]), item[0][1]))
    ]


def model_work_by_level(name: str, *, height: int = 512, width: int = 512) -> list[dict[str, Any]]:
    """:func:`unet_work_by_level` of catalog model ``name``'s full-size UNet (built on meta), with guidance."""
    with torch.device("meta"):
        unet = build_random_unet(name)
    return unet_work_by_level(unet, height=height, width=width)


def full_size_component_parameters(name: str) -> dict[str, int]:
    """Parameters of catalog model ``name``'s UNet, text encoder and VAE at full size (counted on meta): the UNet is
    the model's own, the CLIP ViT-L/14 text tower and the VAE are shared by every SD v1.x model and DeciDiffusion."""

    with torch.device("meta"):
        return {
            "unet": count_parameters(build_random_unet(name)),
            "text_encoder": count_parameters(CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L_TEXT_CONFIG))),
            "vae": count_parameters(AutoencoderKL(**SD_VAE_CONFIG)),
        }
