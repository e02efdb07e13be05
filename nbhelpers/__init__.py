"""Helpers for the DeciDiffusion / Stable Diffusion tutorial notebooks.

The most used names are importable from the package itself (loaded lazily, so ``import nbhelpers`` is
fast)::

    from nbhelpers import load_pipeline, generate, show_images
    pipe = load_pipeline("deci-v1")             # offline: stand_in="toy" (see nbhelpers.stand_in)
    result = generate(pipe, "A big owl with bright shinning eyes", seed=0)
    show_images(result.images, result.labels())
"""

from __future__ import annotations

from nbhelpers.lazy_exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "CATALOG": "nbhelpers.catalog",
    "ModelSpec": "nbhelpers.catalog",
    "UnknownModelError": "nbhelpers.catalog",
    "get_spec": "nbhelpers.catalog",
    "catalog_table": "nbhelpers.catalog",
    "FlexibleUNet2DConditionModel": "nbhelpers.models.flexible_unet",
    "DeciDiffusionPipeline": "nbhelpers.models.deci_pipeline",
    "load_pipeline": "nbhelpers.loading",
    "ModelLoadError": "nbhelpers.loading",
    "generate": "nbhelpers.generation",
    "Generation": "nbhelpers.generation",
    "swap_scheduler": "nbhelpers.models.schedulers",
    "environment_report": "nbhelpers.environment",
    "measure": "nbhelpers.perf.timing",
    "resolve_stand_in": "nbhelpers.stand_in",
    "stand_in_mark": "nbhelpers.stand_in",
    "show_images": "nbhelpers.images",
    "image_grid": "nbhelpers.images",
    "save_image": "nbhelpers.images",
    "read_image_metadata": "nbhelpers.images",
    "populate_hf_cache": "nbhelpers.models.tiny",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
