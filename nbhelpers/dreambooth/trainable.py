"""Which parameters a DreamBooth run trains, and the precision of the rest.

LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) leaves each adapted weight ``W`` (``out x in``) frozen and
learns a low-rank change beside it: the layer computes ``W x + (alpha / r) * B (A x)`` with ``A`` (``r x in``) and
``B`` (``out x r``), so a layer trains ``r * (in + out)`` numbers instead of ``in * out``. Here alpha equals the
rank (scale 1, diffusers' DreamBooth-LoRA default), ``A`` starts Gaussian and ``B`` at zero, so training starts
from the base model exactly. Full fine-tuning trains the whole UNet (and, with ``train_text_encoder``, the text
encoder); the VAE never trains.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.training_utils import cast_training_params

from nbhelpers.dreambooth.config import TEXT_ENCODER_LORA_MODULES, DreamBoothConfig, DreamBoothConfigError


def lora_config(rank: int, target_modules: list[str] | tuple[str, ...]) -> Any:
    """peft's ``LoraConfig`` of a DreamBooth run: rank ``rank`` on ``target_modules``, alpha = rank (scale 1)."""
    # Lazy: peft is the optional [training] extra.
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(target_modules))


def check_lora_targets(unet: torch.nn.Module, targets: list[str] | tuple[str, ...]) -> None:
    """Refuse target names that match no module of the UNet (peft's rule: the name, or a name ending in
    ``.target``), before anything is changed."""
    names = [name for name, _ in unet.named_modules()]
    missing = [m for m in targets if not any(n == m or n.endswith("." + m) for n in names)]
    if missing:
        raise DreamBoothConfigError(
            f"lora_target_modules {missing} name no module of the UNet; use attention projections such "
            "as to_q, to_k, to_v, to_out.0 (or proj_in, proj_out, ff.net.2)."
        )


def set_up_trainable(
    unet: Any,
    text_encoder: Any,
    vae: torch.nn.Module,
    config: DreamBoothConfig,
    *,
    gradient_checkpointing: bool,
) -> None:
    """Freeze what does not train, add the LoRA adapters (LoRA runs), turn on gradient checkpointing, and put the
    frozen models in eval mode. Models are changed in place."""
    vae.requires_grad_(False)
    text_encoder.requires_grad_(config.train_text_encoder and not config.use_lora)
    unet.requires_grad_(not config.use_lora)
    if config.use_lora:
        check_lora_targets(unet, config.lora_target_modules)
        unet.add_adapter(lora_config(config.lora_rank, config.lora_target_modules))
        if config.train_text_encoder:
            text_encoder.add_adapter(lora_config(config.lora_rank, TEXT_ENCODER_LORA_MODULES))
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if config.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    vae.eval()
    if not config.train_text_encoder:
        text_encoder.eval()


def cast_frozen_weights(
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module,
    vae: torch.nn.Module,
    config: DreamBoothConfig,
    dtype: torch.dtype,
) -> None:
    """Under mixed precision keep frozen weights (VAE, untrained text encoder, LoRA's base UNet) in ``dtype``, as
    diffusers' training scripts do, while every trained parameter stays fp32."""

    if dtype == torch.float32:
        return
    vae.to(dtype=dtype)
    if config.use_lora or not config.train_text_encoder:
        text_encoder.to(dtype=dtype)
    if config.use_lora:
        unet.to(dtype=dtype)
        trained = [unet] + ([text_encoder] if config.train_text_encoder else [])
        cast_training_params(trained, dtype=torch.float32)


def named_trainable_parameters(modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Parameter]:
    """``{"<prefix>.<name>": parameter}`` of the parameters of ``{prefix: module}`` that require gradients."""
    return {
        f"{prefix}.{name}": parameter
        for prefix, module in modules.items()
        for name, parameter in module.named_parameters()
        if parameter.requires_grad
    }
