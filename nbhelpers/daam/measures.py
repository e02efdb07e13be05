"""Numbers from DAAM heat maps: attention shares, segmentation masks, how much two words' maps overlap, and how a
word's map settles over the denoising steps (notebook 05).

- :func:`attention_share`: a heat map in units every map shares. A global heat map adds up each pixel's attention
  probabilities over the steps and averages them over layers and heads; divided by the steps it aggregated, it is
  the share of the pixel's attention (which sums to 1 over the 77 tokens) that went to each token. Maps of other
  models, step ranges, layers or heads can then be drawn on one colour scale.
- :func:`word_mask`: a word's map as a segmentation mask: upsampled to the image, min-max normalised and
  thresholded, as the reference implementation turns maps into masks (threshold 0.4 by default there too).
- :func:`mask_overlap`: intersection over union, and intersection over each mask's area (the reference's
  ``compute_iou`` and ``compute_ioa``), e.g. to measure how entangled two nouns' maps are.
- :func:`map_correlation` and :func:`settling`: how alike two maps are, and how alike each step's map is to the
  map over all steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from nbhelpers.daam.heatmap import GlobalHeatMap, WordHeatMap

#: The threshold the reference implementation applies to min-max normalised maps to make masks (castorini/daam:
#: ``daam.utils.plot_mask_heat_map(threshold=0.4)`` and its evaluation script's ``--threshold`` default).
REFERENCE_THRESHOLD = 0.4


def attention_share(heat_map: GlobalHeatMap, steps: int) -> GlobalHeatMap:
    """``heat_map`` divided by the number of UNet calls (``steps``) it was summed over: per pixel, the mean share of
    attention each token received (0 to 1; a pixel's shares over all 77 tokens add up to 1 before upsampling)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}.")
    return GlobalHeatMap(heat_map.tokenizer, heat_map.prompt, heat_map.heat_maps / steps)


def word_mask(word_map: WordHeatMap, image: Image.Image, threshold: float = REFERENCE_THRESHOLD) -> torch.Tensor:
    """Boolean ``(height, width)`` mask of the pixels where the word's min-max normalised map exceeds ``threshold``."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1): the map is min-max normalised; got {threshold}.")
    return word_map.expand_as(image, threshold=threshold).bool()


@dataclass(frozen=True)
class MaskOverlap:
    """How two masks ``a`` and ``b`` overlap: ``iou`` = |a & b| / |a | b|; ``of_a`` = |a & b| / |a| (the share of
    a's area that b covers); ``of_b`` = |a & b| / |b|. Each is 0 when the masks are disjoint, 1 when they agree."""

    iou: float
    of_a: float
    of_b: float


def mask_overlap(a: torch.Tensor, b: torch.Tensor) -> MaskOverlap:
    """Intersection over union and over each mask's area of two boolean masks of one shape."""
    if a.shape != b.shape:
        raise ValueError(f"The masks must have one shape; got {tuple(a.shape)} and {tuple(b.shape)}.")
    a, b = a.bool(), b.bool()
    inter = float((a & b).sum())

    def ratio(area: torch.Tensor) -> float:
        return inter / float(area) if float(area) else 0.0

    return MaskOverlap(iou=ratio((a | b).sum()), of_a=ratio(a.sum()), of_b=ratio(b.sum()))


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two maps of one shape, pixel by pixel (``nan`` when either map is constant)."""
    if a.shape != b.shape:
        raise ValueError(f"The maps must have one shape; got {tuple(a.shape)} and {tuple(b.shape)}.")
    stacked = torch.stack((a.flatten().double(), b.flatten().double()))
    if bool((stacked.std(dim=1) == 0).any()):
        return float("nan")
    return float(torch.corrcoef(stacked)[0, 1])


def settling(tracer: Any, word: str, batch_idx: int = 0, **options: Any) -> list[float]:
    """For each recorded UNet call, the correlation of ``word``'s map from that call alone with its map over all
    calls: how early the word's layout is decided. ``options`` go to ``compute_global_heat_map`` (``factors``,
    ``include_mid_block``); both maps are aggregated the same way (per-step sums, one clamp)."""
    steps: Iterable[int] = range(tracer.num_steps)
    final = tracer.compute_global_heat_map(steps=steps, batch_idx=batch_idx, **options)
    target = final.compute_word_heat_map(word).value
    return [
        map_correlation(
            tracer.compute_global_heat_map(steps=[step], batch_idx=batch_idx, **options)
            .compute_word_heat_map(word)
            .value,
            target,
        )
        for step in range(tracer.num_steps)
    ]
