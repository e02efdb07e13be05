"""Offline tiny pipelines: the hub repos' layout and classes with small random weights.

No machine running the tests reaches the Hugging Face hub, so for every catalog entry the project builds,
on demand, a pipeline folder laid out exactly like the hub repository (``model_index.json``, the same
component subfolders, configs and classes; DeciDiffusion's ``flexible_unet/`` included) with tiny random
weights and the real CLIP tokenizer. Images they make are noise-like: they exercise code paths, they are
not results.

Folders are built once (deterministically, seed 0) into ``$NBHELPERS_CACHE/tiny`` (default
``~/.cache/nbhelpers/tiny``); a build happens in a temporary folder that is renamed into place when
complete, so an interrupted build never leaves a broken pipeline behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

from nbhelpers.atomic import atomic_folder
from nbhelpers.catalog import CATALOG, ModelSpec, get_spec
from nbhelpers.models.flexible_unet import TINY_FLEXIBLE_UNET_CONFIG, FlexibleUNet2DConditionModel
from nbhelpers.models.tokenizer import CLIP_BOS_ID, CLIP_EOS_ID, CLIP_VOCAB_SIZE, write_clip_tokenizer

#: Bump when the tiny layout or configs change, so stale cached folders are rebuilt.
TINY_FORMAT_VERSION = 1
#: Text-encoder width of every tiny pipeline (the UNets' cross-attention dimension).
TINY_TEXT_HIDDEN = 32
#: Image side the tiny pipelines generate by default, in pixels (latents are 8x smaller, as for real SD).
TINY_RESOLUTION = 64

_TRUTHY = {"1", "true", "yes", "on"}


def tiny_requested(tiny: bool | None = None) -> bool:
    """Resolve tiny mode: an explicit ``tiny`` argument wins, else the ``NBHELPERS_TINY`` variable."""
    if tiny is not None:
        return bool(tiny)
    return os.environ.get("NBHELPERS_TINY", "").strip().lower() in _TRUTHY


def cache_root() -> Path:
    """Folder for everything nbhelpers caches: ``$NBHELPERS_CACHE`` or ``~/.cache/nbhelpers``."""
    return Path(os.environ.get("NBHELPERS_CACHE") or Path.home() / ".cache" / "nbhelpers")


def _tiny_text_encoder() -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=TINY_TEXT_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=TINY_TEXT_HIDDEN,
        hidden_act="quick_gelu",
        bos_token_id=CLIP_BOS_ID,
        eos_token_id=CLIP_EOS_ID,
        pad_token_id=1,
    )
    return CLIPTextModel(config)


def _tiny_unet(layers_per_block: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=layers_per_block,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_TEXT_HIDDEN,
        attention_head_dim=2,
        norm_num_groups=8,
    )


def _tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
        scaling_factor=0.18215,
    )


def _tiny_safety_checker() -> tuple[StableDiffusionSafetyChecker, CLIPImageProcessor]:
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        do_center_crop=True,
        do_normalize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    return StableDiffusionSafetyChecker(config), processor


def _scheduler(spec: ModelSpec) -> PNDMScheduler | DDIMScheduler:
    scheduler_cls = {"PNDMScheduler": PNDMScheduler, "DDIMScheduler": DDIMScheduler}[spec.scheduler_class]
    return scheduler_cls(**spec.scheduler_config)


def _class_entry(library: str, class_name: str) -> list[str]:
    return [library, class_name]


def hub_model_index(spec: ModelSpec) -> dict[str, object]:
    """The ``model_index.json`` of catalog entry ``spec``'s hub repo (DeciDiffusion's names its own pipeline class)."""
    return {
        "_class_name": "DeciDiffusionPipeline" if spec.unet_kind == "flexible" else "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": _class_entry("transformers", "CLIPImageProcessor"),
        "requires_safety_checker": True,
        "safety_checker": _class_entry("stable_diffusion", "StableDiffusionSafetyChecker"),
        "scheduler": _class_entry("diffusers", spec.scheduler_class),
        "text_encoder": _class_entry("transformers", "CLIPTextModel"),
        "tokenizer": _class_entry("transformers", "CLIPTokenizer"),
        "unet": _class_entry("diffusers", "UNet2DConditionModel"),
        "vae": _class_entry("diffusers", "AutoencoderKL"),
    }


def build_tiny_pipeline(name: str, folder: str | os.PathLike[str]) -> Path:
    """Write the tiny pipeline of catalog entry ``name`` into ``folder`` (created if needed; must be empty).

    The folder mirrors the hub repo: ``model_index.json`` plus ``feature_extractor``, ``safety_checker``,
    ``scheduler``, ``text_encoder``, ``tokenizer``, ``unet`` and ``vae``; for DeciDiffusion also
    ``flexible_unet`` (the denoiser actually used), with ``model_index.json`` naming
    ``DeciDiffusionPipeline`` as the real repo does.
    """
    spec = get_spec(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty; give a new or empty folder for the tiny pipeline.")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        components = {
            "text_encoder": _tiny_text_encoder(),
            "unet": _tiny_unet(layers_per_block=1 if spec.name == "small-sd-v0" else 2),
            "vae": _tiny_vae(),
        }
        safety_checker, feature_extractor = _tiny_safety_checker()
        for subfolder, model in components.items():
            model.save_pretrained(folder / subfolder, safe_serialization=True)
        safety_checker.save_pretrained(folder / "safety_checker", safe_serialization=True)
        feature_extractor.save_pretrained(folder / "feature_extractor")
        _scheduler(spec).save_pretrained(folder / "scheduler")
        write_clip_tokenizer(folder / "tokenizer")
        if spec.unet_kind == "flexible":
            flexible = FlexibleUNet2DConditionModel(**TINY_FLEXIBLE_UNET_CONFIG)
            flexible.save_pretrained(folder / "flexible_unet", safe_serialization=True)
    finally:
        torch.random.set_rng_state(generator_state)
    model_index = hub_model_index(spec)
    model_index["_nbhelpers_tiny"] = True
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2), encoding="utf-8")
    (folder / "README.md").write_text(
        f"# Tiny offline stand-in for {spec.hub_id}\n\nRandom weights, same layout and classes as the hub repo. "
        "Built by nbhelpers for tests and offline notebooks: its images are not model outputs.\n",
        encoding="utf-8",
    )
    return folder


def tiny_pipeline_path(name: str, *, rebuild: bool = False) -> Path:
    """Return the cached tiny pipeline folder for catalog entry ``name``, building it first if needed."""
    spec = get_spec(name)
    root = cache_root() / "tiny"
    target = root / f"{spec.name}-v{TINY_FORMAT_VERSION}"
    if target.exists() and not rebuild and (target / "model_index.json").exists():
        return target
    with atomic_folder(target) as staging:
        build_tiny_pipeline(spec.name, staging)
    return target


def _fake_commit(spec: ModelSpec, kind: str = "tiny", version: int = TINY_FORMAT_VERSION) -> str:
    return hashlib.sha1(f"nbhelpers-{kind}-{spec.hub_id}-{version}".encode()).hexdigest()


def hub_snapshot_folder(cache: Path, spec: ModelSpec, commit: str) -> Path:
    """Create the hub-cache entry of ``spec``'s repo with ``refs/main`` -> ``commit``; returns its (empty or stale)
    snapshot folder, which the caller fills."""
    repo_folder = cache / f"models--{spec.hub_id.replace('/', '--')}"
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs" / "main").write_text(commit, encoding="utf-8")
    return repo_folder / "snapshots" / commit


def populate_hf_cache(
    names: list[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    skip_subfolders: tuple[str, ...] = (),
) -> dict[str, Path]:
    """Put tiny pipelines into a Hugging Face hub cache under the real repo ids.

    Afterwards ``from_pretrained("CompVis/stable-diffusion-v1-4")`` with ``HF_HUB_OFFLINE=1`` and
    ``HF_HUB_CACHE=cache_dir`` finds them, so the exact code path of a user online runs offline.

    Args:
        names: catalog names (default: all).
        cache_dir: hub cache folder (default: ``huggingface_hub.constants.HF_HUB_CACHE``).
        skip_subfolders: component folders to leave out (e.g. ``("unet",)`` to prove it is never read).

    Returns:
        ``{catalog name: snapshot folder}``.
    """
    from huggingface_hub import constants

    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    snapshots: dict[str, Path] = {}
    for name in names or list(CATALOG):
        spec = get_spec(name)
        source = tiny_pipeline_path(spec.name)
        snapshot = hub_snapshot_folder(cache, spec, _fake_commit(spec))
        if snapshot.exists():
            shutil.rmtree(snapshot)
        shutil.copytree(source, snapshot, ignore=shutil.ignore_patterns(*skip_subfolders))
        snapshots[spec.name] = snapshot
    return snapshots
