"""CLIP score per picture, computed by torchmetrics, in batches, with the backbone named in every result.

The CLIP score of a picture and its prompt (Hessel et al. 2021, https://arxiv.org/abs/2104.08718) is
``max(100 * cos(E_image, E_text), 0)``: how well CLIP thinks the text describes the picture. torchmetrics
computes it; this module adds what a comparison grid needs around it:

- one score per picture: torchmetrics' public ``clip_score`` and ``CLIPScore`` return the mean of a batch
  (clamped at 0 *after* averaging), so the scores come from the per-pair step both are built on,
  ``_clip_score_update``, each clamped at 0 as in the paper's definition. Its name is private; a test checks
  every score against the public ``clip_score`` of the single pair, so a change upstream fails loudly;
- batches of ``batch_size`` pairs on one device, the model loaded once (:class:`ClipScorer`);
- pictures in any form the project makes (:func:`nbhelpers.quality.images.as_uint8_pictures`);
- the transformers-5 adapter (:mod:`nbhelpers.quality.transformers_compat`), hub ids beyond torchmetrics'
  fixed list, local folders and the offline stand-in (:mod:`nbhelpers.quality.backbones`).

Prompts longer than CLIP's 77 tokens are truncated by torchmetrics, with a warning.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from nbhelpers.quality.backbones import ClipBackbone, load_clip_backbone
from nbhelpers.quality.images import Picture, as_uint8_pictures
from nbhelpers.stand_in import StandIn, stand_in_mark


def _torchmetrics_per_pair_step() -> Callable[..., tuple[torch.Tensor, int]]:
    """torchmetrics' per-pair CLIP score step (imported when a scorer is made: the quality extra is optional)."""
    try:
        # Lazy: torchmetrics is the optional [quality] extra.
        from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    except ImportError as err:
        raise ImportError("The CLIP score needs torchmetrics: pip install 'diffusion-nbhelpers[quality]'.") from err
    return _clip_score_update


#: Picture-prompt pairs per model call by default (scores do not depend on it; memory and speed do).
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class ClipScores:
    """CLIP scores of pictures against their prompts, in input order.

    Attributes:
        scores: one score per picture, in ``[0, 100]``.
        prompts: the prompt each picture was scored against.
        backbone: the CLIP model that scored them (scores of different backbones are not comparable).
        stand_in: ``"tiny"`` when the backbone was the random stand-in: then the scores are meaningless.
    """

    scores: tuple[float, ...]
    prompts: tuple[str, ...]
    backbone: str
    stand_in: StandIn | None = None

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def mark(self) -> str:
        """``""`` for a real backbone, else the stand-in label."""
        return stand_in_mark(self.stand_in)

    @property
    def label(self) -> str:
        """What a chart or table calls these numbers, backbone and any stand-in mark included."""
        if self.stand_in is not None:
            return f"CLIP score ({self.backbone}; {self.mark}: meaningless)"
        return f"CLIP score ({self.backbone})"

    def rows(self) -> list[dict[str, object]]:
        """One record per picture: ``prompt``, ``clip_score``, ``backbone``, ``stand_in`` (the mark, or ``""``)."""
        return [
            {"prompt": prompt, "clip_score": score, "backbone": self.backbone, "stand_in": self.mark}
            for prompt, score in zip(self.prompts, self.scores, strict=True)
        ]


class ClipScorer:
    """Loads a CLIP backbone once and scores pictures against prompts in batches.

    Example::

        scorer = ClipScorer(stand_in="tiny", device="cpu")      # offline; real: ClipScorer() or a hub id
        result = scorer.score(pictures, prompts)                  # result.scores, result.rows(), result.label
    """

    def __init__(
        self,
        backbone: str | os.PathLike[str] | None = None,
        *,
        stand_in: str | None = None,
        processor: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        """See :func:`nbhelpers.quality.backbones.load_clip_backbone` for ``backbone``, ``stand_in``,
        ``processor`` and ``device``; ``batch_size`` is the number of picture-prompt pairs per model call."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
        self._per_pair_step = _torchmetrics_per_pair_step()
        self.backbone: ClipBackbone = load_clip_backbone(
            backbone, stand_in=stand_in, processor=processor, device=device
        )
        self.batch_size = batch_size

    def score(self, pictures: Picture | Sequence[Picture], prompts: str | Sequence[str]) -> ClipScores:
        """The CLIP score of each picture against its prompt (same order, same length).

        Raises:
            ValueError: for no pictures, a different number of prompts, or values that are not pictures.
        """
        tensors = as_uint8_pictures(pictures, self.backbone.device)
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not tensors:
            raise ValueError("No pictures to score.")
        if len(texts) != len(tensors):
            raise ValueError(f"Give one prompt per picture: {len(tensors)} pictures, {len(texts)} prompts.")
        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(tensors), self.batch_size):
                stop = start + self.batch_size
                batch, _ = self._per_pair_step(
                    tensors[start:stop], texts[start:stop], self.backbone.model, self.backbone.processor
                )
                scores.extend(batch.clamp(min=0).float().cpu().tolist())
        return ClipScores(
            scores=tuple(scores), prompts=tuple(texts), backbone=self.backbone.name, stand_in=self.backbone.stand_in
        )


def clip_scores(
    pictures: Picture | Sequence[Picture],
    prompts: str | Sequence[str],
    *,
    backbone: str | os.PathLike[str] | None = None,
    stand_in: str | None = None,
    processor: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ClipScores:
    """Score ``pictures`` against ``prompts`` once (loads the backbone; use :class:`ClipScorer` for many calls)."""
    scorer = ClipScorer(backbone, stand_in=stand_in, processor=processor, device=device, batch_size=batch_size)
    return scorer.score(pictures, prompts)
