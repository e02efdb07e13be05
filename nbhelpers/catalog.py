"""The model catalog: the models the notebooks use, by short name.

Each entry names the Hugging Face hub repository a user downloads, the pipeline defaults the model's
authors publish (steps, guidance, scheduler settings) and a one-line description. Facts come from the
model cards and published configs (see :mod:`nbhelpers.models.configs` for the sources).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nbhelpers.errors import ConfigurationError
from nbhelpers.models.configs import DECI_DDIM_SCHEDULER, SD_V1_PNDM_SCHEDULER


class UnknownModelError(ConfigurationError):
    """Raised when a model name is neither a catalog name, an alias, a hub id nor a local folder."""


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry.

    Attributes:
        name: short catalog name, e.g. ``"deci-v1"``.
        hub_id: Hugging Face hub repository id the real weights live in.
        description: one line for tables and ``--help``.
        unet_kind: ``"unet2d"`` (diffusers ``UNet2DConditionModel``) or ``"flexible"`` (DeciDiffusion's
            flexible UNet in the ``flexible_unet`` subfolder).
        pipeline_class: the pipeline class the repo's ``model_index.json`` names (``"StableDiffusionPipeline"``
            or ``"DeciDiffusionPipeline"``); :func:`nbhelpers.models.components.pipeline_class` maps it to a class.
        layers_per_block: resnets per UNet block (2 for SD v1.x; 1 for small-sd, distilled).
        num_inference_steps: default denoising steps.
        guidance_scale: default classifier-free guidance scale (guidance is on when > 1).
        guidance_rescale: default guidance rescale (0 disables it).
        resolution: native image side in pixels.
        unet_params: number of UNet parameters (from the published config).
        scheduler_class: diffusers scheduler class name in the repo's ``scheduler/`` folder.
        scheduler_config: published scheduler settings (keys of the scheduler's config).
        aliases: other names (old or removed hub ids) that resolve to this entry.
        fp16_variant: the repo also has half-precision weight files (``variant="fp16"``, half the download).
        fp16_files: the repo's only weight files are half precision (DeciDiffusion): a load downloads fp16 without
            asking for a variant.
        licence: the licence of the weights, as the model card states it.
    """

    name: str
    hub_id: str
    description: str
    unet_kind: str = "unet2d"
    pipeline_class: str = "StableDiffusionPipeline"
    layers_per_block: int = 2
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    guidance_rescale: float = 0.0
    resolution: int = 512
    unet_params: int = 859_520_964
    scheduler_class: str = "PNDMScheduler"
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    fp16_variant: bool = False
    fp16_files: bool = False
    licence: str = "CreativeML OpenRAIL-M"

    @property
    def unet_subfolder(self) -> str:
        """Subfolder of the hub repo that holds the denoiser the pipeline must use."""
        return "flexible_unet" if self.unet_kind == "flexible" else "unet"

    @property
    def download_bytes_per_parameter(self) -> int:
        """Bytes per parameter of the weight files a GPU load (fp16) downloads: 2 where the repo has half-precision
        files (an fp16 variant, or fp16 files only), else 4 (the fp32 files, converted after the download)."""
        return 2 if self.fp16_variant or self.fp16_files else 4

    def generation_defaults(self) -> dict[str, Any]:
        """Keyword arguments for a pipeline call that reproduce the published defaults."""
        defaults: dict[str, Any] = {
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
        }
        if self.guidance_rescale:
            defaults["guidance_rescale"] = self.guidance_rescale
        return defaults


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="sd-v1-4",
            hub_id="CompVis/stable-diffusion-v1-4",
            description="Stable Diffusion v1.4 (CompVis), 860M-parameter UNet, 50 PNDM steps.",
            scheduler_config=SD_V1_PNDM_SCHEDULER,
            fp16_variant=True,
        ),
        ModelSpec(
            name="sd-v1-5",
            hub_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
            description="Stable Diffusion v1.5, 860M-parameter UNet, 50 PNDM steps (community mirror).",
            scheduler_config=SD_V1_PNDM_SCHEDULER,
            aliases=("runwayml/stable-diffusion-v1-5", "sd-v1.5", "sd15"),
            fp16_variant=True,
        ),
        ModelSpec(
            name="deci-v1",
            hub_id="Deci/DeciDiffusion-v1-0",
            description="DeciDiffusion 1.0: 815M-parameter flexible UNet, 30 DDIM steps, v-prediction.",
            unet_kind="flexible",
            pipeline_class="DeciDiffusionPipeline",
            num_inference_steps=30,
            guidance_scale=7.5,
            guidance_rescale=0.7,
            unet_params=814_746_884,
            scheduler_class="DDIMScheduler",
            scheduler_config=DECI_DDIM_SCHEDULER,
            aliases=("decidiffusion", "decidiffusion-v1-0"),
            fp16_files=True,  # text_encoder 246 MB, vae 167 MB, flexible_unet 1.63 GB on the hub: fp16 only
            licence="CreativeML Open RAIL++-M (weights), Apache 2.0 (code)",
        ),
        ModelSpec(
            name="small-sd-v0",
            hub_id="OFA-Sys/small-stable-diffusion-v0",
            description="Small Stable Diffusion v0 (OFA-Sys): distilled, one layer per block, 579M UNet.",
            unet_params=579_384_964,
            layers_per_block=1,
            scheduler_config=SD_V1_PNDM_SCHEDULER,
            aliases=("small-sd",),
            licence="OpenRAIL (the hub's licence tag)",  # fp32 .bin files only, no fp16 variant
        ),
    )
}


def normalise_name(name: str) -> str:
    """Lower-case ``name`` without surrounding spaces or trailing slashes (hub ids are often copied as
    ``"OFA-Sys/small-stable-diffusion-v0/"``, the form a folder path or URL takes)."""
    return name.strip().rstrip("/").strip().lower()


def find_spec(name: str) -> ModelSpec | None:
    """Return the catalog entry for a short name, alias or hub id (case-insensitive), or ``None``."""
    key = normalise_name(name)
    for spec in CATALOG.values():
        candidates = {spec.name, spec.hub_id.lower(), *(alias.lower() for alias in spec.aliases)}
        if key in candidates:
            return spec
    return None


def get_spec(name: str) -> ModelSpec:
    """Return the catalog entry for ``name`` or raise :class:`UnknownModelError` listing the known names."""
    spec = find_spec(name)
    if spec is None:
        raise UnknownModelError(
            f"Unknown model {name!r}. Known models: {', '.join(known_model_names())} "
            "(or pass a Hugging Face hub id like 'owner/repo', or a local pipeline folder)."
        )
    return spec


def known_model_names() -> list[str]:
    """Short names of every catalog entry, in catalog order."""
    return list(CATALOG)


def catalog_table() -> list[dict[str, Any]]:
    """Rows describing the catalog, for display in a notebook (``pandas.DataFrame(catalog_table())``)."""
    return [
        {
            "name": spec.name,
            "hub id": spec.hub_id,
            "steps": spec.num_inference_steps,
            "guidance": spec.guidance_scale,
            "UNet params (M)": round(spec.unet_params / 1e6, 1),
            "description": spec.description,
        }
        for spec in CATALOG.values()
    ]
