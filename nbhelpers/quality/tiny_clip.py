"""A tiny random-weight CLIP for offline runs: the ``stand_in="tiny"`` backbone of the CLIP score.

It has the real ``CLIPModel`` layout (vision and text towers, projections) at 16 channels, with the tiny
pipelines' safety-checker configuration, the real CLIP tokenizer and CLIP's image preprocessing at 32 px. Its
weights are random, so its scores measure nothing: they exercise the scoring code path offline, and every result
made with it carries the stand-in mark (:func:`nbhelpers.stand_in.stand_in_mark`).

Built once, deterministically (seed 0), into ``$NBHELPERS_CACHE/tiny/clip-score-v<version>``, through a staging
folder renamed into place when complete (like the tiny pipelines of :mod:`nbhelpers.models.tiny`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from nbhelpers.atomic import atomic_folder
from nbhelpers.models.configs import TINY_FEATURE_EXTRACTOR_CONFIG, TINY_SAFETY_CHECKER_CLIP_CONFIG
from nbhelpers.models.tiny import cache_root
from nbhelpers.models.tokenizer import write_clip_tokenizer

#: Bump when the tiny CLIP's configuration changes, so stale cached folders are rebuilt.
TINY_CLIP_FORMAT_VERSION = 1
#: The name results carry for this backbone.
TINY_CLIP_NAME = f"nbhelpers/tiny-random-clip-v{TINY_CLIP_FORMAT_VERSION}"


def build_tiny_clip(folder: str | os.PathLike[str]) -> Path:
    """Write the tiny CLIP (``CLIPModel`` weights as safetensors plus its ``CLIPProcessor``) into ``folder``.

    The same folder loads with ``CLIPModel.from_pretrained`` and ``CLIPProcessor.from_pretrained``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # seed 0 for the weights, the caller's random state left as it was
        torch.manual_seed(0)
        model = CLIPModel(CLIPConfig(**TINY_SAFETY_CHECKER_CLIP_CONFIG))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder))  # the processor saves it again beside
    CLIPProcessor(
        image_processor=CLIPImageProcessor(**TINY_FEATURE_EXTRACTOR_CONFIG), tokenizer=tokenizer
    ).save_pretrained(folder)
    (folder / "README.md").write_text(
        "# Tiny random CLIP\n\nRandom weights in CLIPModel's layout, built by nbhelpers for offline runs of the CLIP "
        "score. Its scores are meaningless: they test code paths, they are not measurements.\n",
        encoding="utf-8",
    )
    return folder


def tiny_clip_path(*, rebuild: bool = False) -> Path:
    """The cached tiny CLIP folder, built first if needed."""
    target = cache_root() / "tiny" / f"clip-score-v{TINY_CLIP_FORMAT_VERSION}"
    if target.is_dir() and (target / "config.json").exists() and not rebuild:
        return target
    with atomic_folder(target, keep_existing=not rebuild) as staging:
        build_tiny_clip(staging)
    return target
