"""Random-weight stand-ins for the fast paths' LoRA files, in the real files' key layout, for offline runs and tests.

The real adapters (:data:`nbhelpers.perf.fast_paths.FAST_PATHS`) live on the Hugging Face hub. Offline, the project
writes files with the same names and the same key layout, holding random low-rank weights for a given UNet's layers:

- for the tiny stand-in (``load_pipeline("sd-v1-5", stand_in="tiny", fast_path=...)``): a folder per fast path in
  the nbhelpers cache (:func:`tiny_fast_path_folder`);
- under the real repository ids in a Hugging Face cache (:func:`populate_hf_cache_with_fast_paths`), the way
  :func:`nbhelpers.models.tiny.populate_hf_cache` serves pipelines, so the exact code a user runs online
  (``load_lora_weights("latent-consistency/lcm-lora-sdv1-5", ...)``) runs offline;
- at full size for timing (:func:`write_random_lora`), since fused random weights cost what fused real ones cost.

Key layouts (:data:`KEY_FORMATS`): ``"kohya"``, ``lora_unet_<layer with _ for .>.lora_down.weight`` /
``.lora_up.weight`` / ``.alpha`` (the layout of ``latent-consistency/lcm-lora-sdv1-5``'s file, e.g.
``lora_unet_up_blocks_2_attentions_0_proj_in.lora_up.weight``, as printed in
https://github.com/luosiallen/latent-consistency-model/issues/57), and ``"diffusers"``,
``unet.<layer>.lora.down.weight`` / ``.lora.up.weight`` (what diffusers' training scripts save). diffusers'
``load_lora_weights`` recognises either; which one the TCD and Hyper-SD files use was not checked here, so the tests
load both. Pictures made with these weights are noise: they exercise code paths only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import cast

import torch
from diffusers import UNet2DConditionModel
from huggingface_hub import constants
from safetensors.torch import save_file

from nbhelpers.atomic import atomic_folder
from nbhelpers.models.configs import tiny_sd_unet_config
from nbhelpers.models.tiny import cache_root
from nbhelpers.perf.fast_paths import FAST_PATHS, adapter_layers, get_fast_path

KEY_FORMATS = ("kohya", "diffusers")
#: Bump when the stand-in files change, so stale cached copies are rebuilt.
FAST_PATH_LORA_VERSION = 1


def random_lora_state_dict(
    unet: torch.nn.Module,
    *,
    rank: int = 4,
    key_format: str = "kohya",
    seed: int = 0,
    scale: float = 0.1,
    dtype: torch.dtype = torch.float16,
) -> dict[str, torch.Tensor]:
    """Random LoRA weights for the adapter layers of ``unet`` (it may live on the meta device: only shapes are read).

    ``alpha`` equals ``rank`` in the kohya layout, so the update is ``up @ down`` at scale 1.
    """
    if key_format not in KEY_FORMATS:
        raise ValueError(f"key_format must be one of {', '.join(KEY_FORMATS)}; got {key_format!r}.")
    generator = torch.Generator().manual_seed(seed)
    weights: dict[str, torch.Tensor] = {}
    for name, layer in sorted(adapter_layers(unet).items()):
        weight_shape = [int(size) for size in cast(torch.Tensor, layer.weight).shape]  # (out, in) or (out, in, kh, kw)
        down_shape = (rank, *weight_shape[1:])
        up_shape = (weight_shape[0], rank) + (1, 1) * (len(weight_shape) == 4)
        down = (torch.randn(down_shape, generator=generator) * scale).to(dtype)
        up = (torch.randn(up_shape, generator=generator) * scale).to(dtype)
        if key_format == "kohya":
            key = "lora_unet_" + name.replace(".", "_")
            weights.update(
                {
                    f"{key}.lora_down.weight": down,
                    f"{key}.lora_up.weight": up,
                    f"{key}.alpha": torch.tensor(float(rank)),
                }
            )
        else:
            weights.update({f"unet.{name}.lora.down.weight": down, f"unet.{name}.lora.up.weight": up})
    return weights


def write_random_lora(
    folder: str | os.PathLike[str], name: str, unet: torch.nn.Module, *, key_format: str = "kohya", rank: int = 4
) -> Path:
    """Write fast path ``name``'s adapter file, with random weights for ``unet``'s layers, into ``folder``."""
    path = get_fast_path(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.weight_name
    save_file(random_lora_state_dict(unet, rank=rank, key_format=key_format), target)
    return target


def _tiny_sd_unet() -> torch.nn.Module:
    with torch.device("meta"):
        return UNet2DConditionModel(**tiny_sd_unet_config(2))


def tiny_fast_path_folder(name: str, *, rebuild: bool = False) -> Path:
    """The cached folder holding fast path ``name``'s adapter file for the tiny SD stand-in (built on first use)."""
    path = get_fast_path(name)
    target = cache_root() / "tiny" / f"fast-path-{path.name}-v{FAST_PATH_LORA_VERSION}"
    if (target / path.weight_name).is_file() and not rebuild:
        return target
    with atomic_folder(target, keep_existing=not rebuild) as staging:
        write_random_lora(staging, path.name, _tiny_sd_unet())
    return target


def populate_hf_cache_with_fast_paths(
    names: list[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    key_format: str = "kohya",
) -> dict[str, Path]:
    """Put tiny-UNet adapter files into a Hugging Face hub cache under the real repository ids and file names.

    Afterwards, with ``HF_HUB_OFFLINE=1`` and that cache, ``apply_fast_path(pipe, name)`` on the tiny SD pipeline
    (for example one loaded by hub id from :func:`nbhelpers.models.tiny.populate_hf_cache`) runs the real loading
    code. Returns ``{fast path: file}``.
    """

    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    files: dict[str, Path] = {}
    for name in names or list(FAST_PATHS):
        path = get_fast_path(name)
        commit = hashlib.sha1(f"nbhelpers-fast-path-{path.repo_id}-{FAST_PATH_LORA_VERSION}".encode()).hexdigest()
        repo_folder = cache / f"models--{path.repo_id.replace('/', '--')}"
        (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
        (repo_folder / "refs" / "main").write_text(commit, encoding="utf-8")
        snapshot = repo_folder / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        if key_format == "kohya":
            source = tiny_fast_path_folder(path.name) / path.weight_name
            files[path.name] = Path(shutil.copy2(source, snapshot / path.weight_name))
        else:
            files[path.name] = write_random_lora(snapshot, path.name, _tiny_sd_unet(), key_format=key_format)
    return files
