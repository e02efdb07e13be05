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
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from huggingface_hub import constants
from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

from nbhelpers.atomic import atomic_folder
from nbhelpers.catalog import CATALOG, ModelSpec, get_spec
from nbhelpers.models.components import build_scheduler, build_unet
from nbhelpers.models.configs import (
    TINY_CLIP_TEXT_CONFIG,
    TINY_FEATURE_EXTRACTOR_CONFIG,
    TINY_SAFETY_CHECKER_CLIP_CONFIG,
    TINY_VAE_CONFIG,
    tiny_sd_unet_config,
)
from nbhelpers.models.tokenizer import write_clip_tokenizer

#: Bump when the tiny layout or configs change, so stale cached folders are rebuilt.
TINY_FORMAT_VERSION = 1


def cache_root() -> Path:
    """Folder for everything nbhelpers caches: ``$NBHELPERS_CACHE`` or ``~/.cache/nbhelpers``."""
    return Path(os.environ.get("NBHELPERS_CACHE") or Path.home() / ".cache" / "nbhelpers")


def _class_entry(library: str, class_name: str) -> list[str]:
    return [library, class_name]


def hub_model_index(spec: ModelSpec) -> dict[str, object]:
    """The ``model_index.json`` of catalog entry ``spec``'s hub repo (DeciDiffusion's names its own pipeline class)."""
    return {
        "_class_name": spec.pipeline_class,
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
            "text_encoder": CLIPTextModel(CLIPTextConfig(**TINY_CLIP_TEXT_CONFIG)),
            "unet": UNet2DConditionModel(**tiny_sd_unet_config(spec.layers_per_block)),
            "vae": AutoencoderKL(**TINY_VAE_CONFIG),
        }
        safety_checker = StableDiffusionSafetyChecker(CLIPConfig(**TINY_SAFETY_CHECKER_CLIP_CONFIG))
        feature_extractor = CLIPImageProcessor(**TINY_FEATURE_EXTRACTOR_CONFIG)
        for subfolder, model in components.items():
            model.save_pretrained(folder / subfolder, safe_serialization=True)
        safety_checker.save_pretrained(folder / "safety_checker", safe_serialization=True)
        feature_extractor.save_pretrained(folder / "feature_extractor")
        build_scheduler(spec).save_pretrained(folder / "scheduler")
        write_clip_tokenizer(folder / "tokenizer")
        if spec.unet_kind == "flexible":
            build_unet(spec, tiny=True).save_pretrained(folder / "flexible_unet", safe_serialization=True)
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
    with atomic_folder(target, keep_existing=not rebuild) as staging:
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
