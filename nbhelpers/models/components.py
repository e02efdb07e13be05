"""Classes and builders chosen from a catalog entry: the one place that maps a :class:`ModelSpec` to code.

Loading (:mod:`nbhelpers.loading`), the tiny builds (:mod:`nbhelpers.models.tiny`) and the random-weight
builds (:mod:`nbhelpers.models.random_weights`) all ask here which pipeline class, scheduler and UNet a
catalog model uses, so adding a model means adding a catalog entry, not editing three modules.
"""

from __future__ import annotations

import copy
from typing import Any

import diffusers
from diffusers import SchedulerMixin, StableDiffusionPipeline, UNet2DConditionModel

from nbhelpers.catalog import ModelSpec
from nbhelpers.models.configs import (
    DECI_FLEXIBLE_UNET_CONFIG,
    TINY_FLEXIBLE_UNET_CONFIG,
    sd_unet_config,
    tiny_sd_unet_config,
)
from nbhelpers.models.deci_pipeline import DeciDiffusionPipeline
from nbhelpers.models.flexible_unet import FlexibleUNet2DConditionModel

_PIPELINE_CLASSES: dict[str, type[StableDiffusionPipeline]] = {
    "StableDiffusionPipeline": StableDiffusionPipeline,
    "DeciDiffusionPipeline": DeciDiffusionPipeline,
}


def pipeline_class(spec: ModelSpec) -> type[StableDiffusionPipeline]:
    """The pipeline class of a catalog entry (``DeciDiffusionPipeline`` for DeciDiffusion)."""
    return _PIPELINE_CLASSES[spec.pipeline_class]


def build_scheduler(spec: ModelSpec) -> SchedulerMixin:
    """The catalog entry's scheduler with its published settings (a diffusers scheduler class by name)."""
    return getattr(diffusers, spec.scheduler_class)(**spec.scheduler_config)


def unet_config(spec: ModelSpec, *, tiny: bool = False) -> dict[str, Any]:
    """The denoiser's config: full size (published) or tiny (same block structure, a few channels)."""
    if spec.unet_kind == "flexible":
        config = TINY_FLEXIBLE_UNET_CONFIG if tiny else DECI_FLEXIBLE_UNET_CONFIG
        return {key: value for key, value in copy.deepcopy(config).items() if not key.startswith("_")}
    return (tiny_sd_unet_config if tiny else sd_unet_config)(spec.layers_per_block)


def build_unet(spec: ModelSpec, *, tiny: bool = False) -> UNet2DConditionModel | FlexibleUNet2DConditionModel:
    """The catalog entry's denoiser with random weights (on the current default device)."""
    unet_cls = FlexibleUNet2DConditionModel if spec.unet_kind == "flexible" else UNet2DConditionModel
    return unet_cls(**unet_config(spec, tiny=tiny))
