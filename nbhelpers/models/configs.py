"""Every component config the project builds, in one place: plain dictionaries, no model code.

Full-size configs are the published ones (the hub repos' ``config.json`` files and model cards):

- SD v1.x UNet, https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/blob/main/unet/config.json
  (859,520,964 parameters); small-sd's UNet is the same with one layer per block (579,384,964),
  https://huggingface.co/OFA-Sys/small-stable-diffusion-v0;
- CLIP ViT-L/14 text tower (123,060,480), https://huggingface.co/openai/clip-vit-large-patch14;
- the SD VAE (83,653,863);
- DeciDiffusion's flexible UNet (814,746,884), https://huggingface.co/Deci/DeciDiffusion-v1-0
  (``flexible_unet/config.json``);
- the schedulers' ``scheduler_config.json`` of SD v1.x (PNDM) and DeciDiffusion (DDIM, v-prediction, zero-SNR).

The tiny configs keep each real architecture's structure (block types, numbers of resnets and attentions,
down/upsampling) at a few channels, for offline tests and notebooks (see :mod:`nbhelpers.models.tiny`).
"""

from __future__ import annotations

import copy
from typing import Any

# --- schedulers -------------------------------------------------------------------------------------------

SD_V1_PNDM_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "trained_betas": None,
}

DECI_DDIM_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "squaredcos_cap_v2",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "trained_betas": None,
}


# --- full size ----------------------------------------------------------------------------------------------

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


def sd_unet_config(layers_per_block: int) -> dict[str, Any]:
    """The SD v1.x ``UNet2DConditionModel`` config with ``layers_per_block`` resnets per block (2 for SD v1.x,
    1 for small-sd)."""
    return {**SD_V1_UNET_CONFIG, "layers_per_block": layers_per_block}


# The ``configurations`` entry of Deci/DeciDiffusion-v1-0/flexible_unet/config.json.
_DECI_CONFIGURATIONS: dict[str, Any] = {
    "down_blocks_in_channels": [320, 320, 640],
    "down_blocks_out_channels": [320, 640, 1280],
    "down_blocks_num_resnets": [2, 2, 1],
    "down_blocks_num_attentions": [0, 1, 3],
    "add_downsample": [True, True, True],
    "mid_num_resnets": 4,
    "mid_num_attentions": 2,
    "add_upsample_mid_block": True,
    "prev_output_channels": [1280, 1280, 640],
    "up_blocks_num_resnets": [2, 3, 3],
    "up_blocks_num_attentions": [6, 3, 0],
    "add_upsample": [True, True, False],
    "num_attention_heads": 8,
    "cross_attention_dim": 768,
    "temb_dim": 1280,
    "resnet_eps": 1e-5,
    "resnet_act_fn": "silu",
    "sample_size": 64,
    "mix_block_in_forward": True,
}

#: The published ``flexible_unet/config.json`` as far as it is known: the ``configurations`` above plus the
#: ordinary keys of an SD v1 ``UNet2DConditionModel`` (which the original class recorded with their
#: defaults, except ``sample_size`` and ``cross_attention_dim``).
DECI_FLEXIBLE_UNET_CONFIG: dict[str, Any] = {
    "_class_name": "FlexibleUNet2DConditionModel",
    "configurations": _DECI_CONFIGURATIONS,
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "only_cross_attention": False,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "dropout": 0.0,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "transformer_layers_per_block": 1,
    "attention_head_dim": 8,
    "use_linear_projection": False,
    "upcast_attention": False,
    "resnet_time_scale_shift": "default",
    "time_embedding_type": "positional",
    "time_cond_proj_dim": None,
    "class_embed_type": None,
    "addition_embed_type": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
}


def narrow_flexible_unet_config(
    width: int, *, num_attention_heads: int, cross_attention_dim: int, sample_size: int
) -> dict[str, Any]:
    """DeciDiffusion's flexible-UNet block structure (same resnets and attentions per block, same down/upsample
    flags, 8 skips) at channels ``width, 2 width, 2 width`` instead of 320, 640, 1280."""
    wide = 2 * width
    return {
        "configurations": {
            **copy.deepcopy(_DECI_CONFIGURATIONS),
            "down_blocks_in_channels": [width, width, wide],
            "down_blocks_out_channels": [width, wide, wide],
            "prev_output_channels": [wide, wide, wide],
            "num_attention_heads": num_attention_heads,
            "cross_attention_dim": cross_attention_dim,
            "temb_dim": 4 * width,
            "sample_size": sample_size,
        },
        "sample_size": sample_size,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [width, wide, wide, wide],
        "layers_per_block": 2,
        "norm_num_groups": width // 4,
        "norm_eps": 1e-5,
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": num_attention_heads,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
    }


#: The tiny flexible UNet for offline tests: 8x8 latents, 32-dim text context.
TINY_FLEXIBLE_UNET_CONFIG: dict[str, Any] = narrow_flexible_unet_config(
    32, num_attention_heads=2, cross_attention_dim=32, sample_size=8
)


# --- tiny ---------------------------------------------------------------------------------------------------

#: Text-encoder width of every tiny pipeline (the UNets' cross-attention dimension).
TINY_TEXT_HIDDEN = 32
#: Image side the tiny pipelines generate by default, in pixels (latents are 8x smaller, as for real SD).
TINY_RESOLUTION = 64

TINY_CLIP_TEXT_CONFIG: dict[str, Any] = {
    **CLIP_VIT_L_TEXT_CONFIG,
    "hidden_size": TINY_TEXT_HIDDEN,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": TINY_TEXT_HIDDEN,
}


def tiny_sd_unet_config(layers_per_block: int) -> dict[str, Any]:
    """SD v1.x's UNet block structure at 32/64 channels and 8x8 latents."""
    return {
        "sample_size": TINY_RESOLUTION // 8,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (32, 32, 64, 64),
        "layers_per_block": layers_per_block,
        "down_block_types": SD_V1_UNET_CONFIG["down_block_types"],
        "up_block_types": SD_V1_UNET_CONFIG["up_block_types"],
        "cross_attention_dim": TINY_TEXT_HIDDEN,
        "attention_head_dim": 2,
        "norm_num_groups": 8,
    }


TINY_VAE_CONFIG: dict[str, Any] = {
    **SD_VAE_CONFIG,
    "block_out_channels": (8, 16, 16, 16),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": TINY_RESOLUTION,
}

#: A two-layer-tower CLIP for the tiny safety checker (its vision tower reads 32x32 crops).
TINY_SAFETY_CHECKER_CLIP_CONFIG: dict[str, Any] = {
    "text_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
    "vision_config": {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    },
    "projection_dim": 16,
}

#: CLIP's image preprocessing (the real mean and std) at the tiny safety checker's 32 px.
TINY_FEATURE_EXTRACTOR_CONFIG: dict[str, Any] = {
    **FEATURE_EXTRACTOR_CONFIG,
    "size": {"shortest_edge": 32},
    "crop_size": {"height": 32, "width": 32},
}


# --- toy "shapes" models (trained on a CPU; see nbhelpers.toy) ---------------------------------------------

#: Text-encoder width of the toy models. The text encoder has no transformer layer: each word's embedding
#: (plus its position) reaches the UNet unchanged. A causal two-layer encoder trained from scratch let the
#: padding tokens take most of the cross-attention; word embeddings alone keep each word addressable.
TOY_TEXT_HIDDEN = 64
TOY_RESOLUTION = 64

TOY_CLIP_TEXT_CONFIG: dict[str, Any] = {
    **CLIP_VIT_L_TEXT_CONFIG,
    "hidden_size": TOY_TEXT_HIDDEN,
    "intermediate_size": 4 * TOY_TEXT_HIDDEN,
    "num_hidden_layers": 0,
    "num_attention_heads": 4,
    "projection_dim": TOY_TEXT_HIDDEN,
}

#: 64 px pictures to 16x16x4 latents (two downsamplings, where SD's VAE has three). Narrow (0.24M
#: parameters): flat-coloured shapes need little capacity, and a training step costs 1.7 s at batch 32 on
#: two CPU cores where 32/64/64 channels cost 5x that.
TOY_VAE_CONFIG: dict[str, Any] = {
    **SD_VAE_CONFIG,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (16, 32, 32),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": TOY_RESOLUTION,
}

#: SD v1's UNet layout at three levels: cross-attention at 16x16 and 8x8 and in the 4x4 middle (1.5M
#: parameters; a training step costs about 1.2 s at batch 32 on two CPU cores).
TOY_SD_UNET_CONFIG: dict[str, Any] = {
    "sample_size": TOY_RESOLUTION // 4,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": TOY_TEXT_HIDDEN,
    "attention_head_dim": 8,
    "norm_num_groups": 16,
}

#: DeciDiffusion's flexible-UNet block structure (no attention at the top level) at toy width (3.0M
#: parameters; about 1.4 s per training step at batch 32 on two CPU cores).
TOY_FLEXIBLE_UNET_CONFIG: dict[str, Any] = narrow_flexible_unet_config(
    32, num_attention_heads=8, cross_attention_dim=TOY_TEXT_HIDDEN, sample_size=TOY_RESOLUTION // 4
)
