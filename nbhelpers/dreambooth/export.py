"""Trained LoRA weights in the two layouts other tools load.

- diffusers/peft: the ``lora/`` folder with ``pytorch_lora_weights.safetensors``
  (``pipe.load_lora_weights(folder)``);
- kohya: one ``.safetensors`` file with ``lora_unet_<module path>.lora_down/lora_up.weight`` and ``.alpha``
  keys (``lora_te_...`` for the text encoder), which AUTOMATIC1111 (``models/Lora/``), ComfyUI
  (``models/loras/``) and diffusers' ``load_lora_weights`` read. diffusers' own converter
  (``diffusers.utils.state_dict_utils.convert_state_dict_to_kohya``) does the renaming.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
from safetensors.torch import save

from nbhelpers.atomic import atomic_folder, atomic_open

KOHYA_FILE = "lora_kohya.safetensors"


def peft_state_dicts(unet: torch.nn.Module, text_encoder: torch.nn.Module | None) -> dict[str, dict]:
    """The LoRA tensors of each adapted module, in peft's naming (``...to_q.lora_A.weight``)."""
    # Lazy: peft is the optional [training] extra.
    from peft.utils import get_peft_model_state_dict

    layers = {"unet": get_peft_model_state_dict(unet)}
    if text_encoder is not None:
        layers["text_encoder"] = get_peft_model_state_dict(text_encoder)
    return layers


def save_diffusers_lora(folder: Path, layers: dict[str, dict]) -> Path:
    """Write the diffusers LoRA folder (atomically) from :func:`peft_state_dicts`."""

    text_layers = layers.get("text_encoder")
    with atomic_folder(folder) as staging:
        StableDiffusionPipeline.save_lora_weights(
            staging,
            unet_lora_layers=convert_state_dict_to_diffusers(layers["unet"]),
            text_encoder_lora_layers=convert_state_dict_to_diffusers(text_layers) if text_layers else None,
        )
    return folder


def kohya_state_dict(layers: dict[str, dict], alpha: float) -> dict[str, torch.Tensor]:
    """Kohya keys for :func:`peft_state_dicts`' layers; every ``.alpha`` is ``alpha`` (peft's ``lora_alpha``).

    diffusers' converter writes the rank as alpha (scale 1); it is overwritten with the run's real alpha so a
    future ``lora_alpha != rank`` stays correct.
    """

    prefixed = {f"{prefix}.{name}": tensor for prefix, state in layers.items() for name, tensor in state.items()}
    converted = convert_state_dict_to_kohya(prefixed)
    return {
        name: (torch.tensor(float(alpha)) if name.endswith(".alpha") else tensor.detach().contiguous().cpu())
        for name, tensor in converted.items()
    }


def save_kohya_lora(
    path: Path, layers: dict[str, dict], *, alpha: float, rank: int, base_model: str, stand_in: str = ""
) -> Path:
    """Write one kohya-layout ``.safetensors`` file (atomically) with kohya's descriptive metadata.

    ``stand_in``: the base model's stand-in mark ("tiny, random weights", "toy model (shapes)"), recorded so
    the file is never taken for a LoRA of the real model."""

    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": "sd_v1",
        "ss_sd_model_name": base_model,
        "nbhelpers_weights": f"base model: {stand_in}" if stand_in else "trained with nbhelpers.dreambooth",
    }
    data = save(kohya_state_dict(layers, alpha), metadata=metadata)
    with atomic_open(path, "wb") as file:
        file.write(data)
    return path
