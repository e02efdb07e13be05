"""Quality measured, not asserted: CLIP score per picture, confidence intervals, fixed prompt sets, optional FID.

- ``clip_score``: :class:`ClipScorer` / :func:`clip_scores`, one score per picture via torchmetrics, the backbone
  named in every result (:class:`ClipScores`);
- ``backbones``: which CLIP scores (hub id, local folder, or the offline stand-in) and loading it;
- ``transformers_compat``: the adapter torchmetrics 1.9 needs on transformers 5;
- ``tiny_clip``: the tiny random CLIP behind ``stand_in="tiny"`` (its scores are meaningless);
- ``images``: pictures (PIL, tensors, arrays) into the ``uint8`` tensors the metrics take;
- ``statistics``: mean and 95% bootstrap interval per setting (:func:`summarise`, :func:`summarise_by`);
- ``prompt_sets``: the shipped prompt sets (:func:`load_prompt_set`, :func:`prompt_set_names`);
- ``parti_selection``: how the PartiPrompts subset was chosen (maintainers);
- ``fid``: FID for larger runs with a reference set (optional extra ``quality-fid``);
- ``grid``: the evaluation grid behind ``nbhelpers evaluate`` (images, ``scores.csv``, a summary; resumable).

torchmetrics (the ``quality`` extra) is imported only when a scorer or FID is made, so the prompt sets and
statistics work without it. The guide is ``docs/quality.md``.
"""

from nbhelpers.quality.backbones import (
    DEFAULT_BACKBONE,
    DIFFUSERS_EVALUATION_BACKBONE,
    ClipBackbone,
    load_clip_backbone,
)
from nbhelpers.quality.clip_score import ClipScorer, ClipScores, clip_scores
from nbhelpers.quality.fid import frechet_inception_distance
from nbhelpers.quality.prompt_sets import PromptSet, PublishedCheck, load_prompt_set, prompt_set_names
from nbhelpers.quality.statistics import Summary, summarise, summarise_by

__all__ = [
    "DEFAULT_BACKBONE",
    "DIFFUSERS_EVALUATION_BACKBONE",
    "ClipBackbone",
    "ClipScorer",
    "ClipScores",
    "PromptSet",
    "PublishedCheck",
    "Summary",
    "clip_scores",
    "frechet_inception_distance",
    "load_clip_backbone",
    "load_prompt_set",
    "prompt_set_names",
    "summarise",
    "summarise_by",
]
