"""DeciDiffusion's pipeline: diffusers' StableDiffusionPipeline with DeciDiffusion's published defaults.

The hub repo's ``model_index.json`` names ``DeciDiffusionPipeline``, a class shipped as remote code that no
longer imports on current diffusers. Everything it did differently from ``StableDiffusionPipeline`` is
its denoiser (the flexible UNet, see :mod:`nbhelpers.models.flexible_unet`) and two defaults: 30 inference
steps and ``guidance_rescale=0.7`` when the caller gives none. This class keeps the name and those
defaults and runs no remote code.
"""

from __future__ import annotations

from typing import Any

from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from nbhelpers.models.flexible_unet import FlexibleUNet2DConditionModel

DECI_DEFAULT_STEPS = 30
DECI_DEFAULT_GUIDANCE_RESCALE = 0.7
DECI_DEFAULT_GUIDANCE_SCALE = 7.5


class DeciDiffusionPipeline(StableDiffusionPipeline):
    """``StableDiffusionPipeline`` whose ``unet`` is a ``FlexibleUNet2DConditionModel``.

    Call it like ``StableDiffusionPipeline``; ``num_inference_steps`` defaults to 30 and
    ``guidance_rescale`` to 0.7 (DeciDiffusion was trained with zero-terminal-SNR v-prediction, for which
    rescaled guidance avoids over-exposure), ``guidance_scale`` stays 7.5.
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: FlexibleUNet2DConditionModel | UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        safety_checker: StableDiffusionSafetyChecker | None,
        feature_extractor: CLIPImageProcessor | None,
        image_encoder: CLIPVisionModelWithProjection | None = None,
        requires_safety_checker: bool = True,
    ) -> None:
        # Same components as StableDiffusionPipeline; the signature only widens ``unet``'s type so diffusers'
        # component type check accepts the flexible UNet.
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
            image_encoder=image_encoder,
            requires_safety_checker=requires_safety_checker,
        )

    def __call__(
        self,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        *,
        guidance_scale: float = DECI_DEFAULT_GUIDANCE_SCALE,
        guidance_rescale: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Generate like ``StableDiffusionPipeline.__call__``, with DeciDiffusion's defaults for missing values."""
        if num_inference_steps is None:
            num_inference_steps = DECI_DEFAULT_STEPS
        if guidance_rescale is None:
            guidance_rescale = DECI_DEFAULT_GUIDANCE_RESCALE
        return super().__call__(
            prompt=prompt,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            **kwargs,
        )
