"""Which CLIP model scores the pictures (the "backbone"), and loading it.

Scores from different backbones are not comparable (each CLIP has its own embedding space), so every result
names its backbone. The default is ``openai/clip-vit-large-patch14``, the CLIP family SD v1.x's text encoder
comes from and torchmetrics' default; diffusers' "Evaluating Diffusion Models" page reports its SD v1.4/v1.5
numbers with ``openai/clip-vit-base-patch16`` (:data:`DIFFUSERS_EVALUATION_BACKBONE`), so use that one to compare
with them.

A backbone is a Hugging Face hub id (downloaded once, then cached; ``HF_HUB_OFFLINE=1`` works after that), a
local folder saved with ``save_pretrained`` (model and processor), or the stand-in: ``stand_in="tiny"`` (or
``"toy"``, or ``NBHELPERS_STAND_IN`` set and no backbone given) picks the tiny random CLIP of
:mod:`nbhelpers.quality.tiny_clip`, since no trained CLIP is available offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nbhelpers.device import pick_device
from nbhelpers.errors import ConfigurationError
from nbhelpers.quality.transformers_compat import TensorFeaturesCLIP
from nbhelpers.stand_in import StandIn, resolve_stand_in, stand_in_mark

#: SD v1.x's CLIP family and torchmetrics' default.
DEFAULT_BACKBONE = "openai/clip-vit-large-patch14"
#: The backbone of diffusers' published CLIP scores (docs: conceptual/evaluation).
DIFFUSERS_EVALUATION_BACKBONE = "openai/clip-vit-base-patch16"


@dataclass(frozen=True)
class ClipBackbone:
    """A loaded CLIP model and its processor, ready for torchmetrics.

    Attributes:
        name: the hub id or folder it came from (the tiny stand-in's is :data:`~.tiny_clip.TINY_CLIP_NAME`).
        stand_in: ``"tiny"`` for the random stand-in, else ``None``.
        model: the model, wrapped for torchmetrics (:class:`~.transformers_compat.TensorFeaturesCLIP`).
        processor: the ``CLIPProcessor`` (image preprocessing and tokenizer).
        device: where the model is.
    """

    name: str
    stand_in: StandIn | None
    model: TensorFeaturesCLIP
    processor: Any
    device: torch.device

    @property
    def mark(self) -> str:
        """``""`` for a real backbone; the stand-in label (``"tiny, random weights"``) otherwise."""
        return stand_in_mark(self.stand_in)


def resolve_backbone(
    backbone: str | os.PathLike[str] | None = None, stand_in: str | None = None
) -> tuple[str | None, StandIn | None]:
    """Decide between a named backbone and the stand-in: ``(name, None)`` or ``(None, "tiny")``.

    An explicit ``backbone`` or ``stand_in`` wins; with neither, ``NBHELPERS_STAND_IN`` picks the stand-in and
    otherwise :data:`DEFAULT_BACKBONE` is used. Any stand-in (``"toy"`` or ``"tiny"``) means the tiny random CLIP.

    Raises:
        ConfigurationError: for both a backbone and a stand-in, or an unknown stand-in value.
    """
    if stand_in is not None:
        wanted = resolve_stand_in(stand_in)
        if wanted is not None and backbone is not None:
            raise ConfigurationError(
                f"Give a CLIP backbone ({os.fspath(backbone)!r}) or stand_in={stand_in!r}, not both."
            )
        if wanted is not None:
            return None, "tiny"
    if backbone is not None:
        return os.fspath(backbone), None
    if stand_in is None and resolve_stand_in(None) is not None:
        return None, "tiny"
    return DEFAULT_BACKBONE, None


def _load(source: str, processor_source: str) -> tuple[Any, Any]:
    # Lazy: transformers loads with a CLIP model only; nbhelpers.quality (statistics, prompt sets) imports this module.
    from transformers import CLIPModel, CLIPProcessor

    # A folder a user was handed is read from safetensors only (a .bin file is a pickle); hub repos are read as
    # transformers reads them (safetensors first, a .bin only with torch.load(weights_only=True)).
    safe_only = {"use_safetensors": True} if Path(source).expanduser().is_dir() else {}
    try:
        return CLIPModel.from_pretrained(source, **safe_only), CLIPProcessor.from_pretrained(processor_source)
    except (OSError, ValueError, RuntimeError) as err:  # missing, damaged or pickled weights
        reason = str(err).rstrip(".")  # transformers' messages end with a full stop of their own
        raise ConfigurationError(
            f"Cannot load the CLIP backbone {source!r} (processor {processor_source!r}): {reason}. Give a CLIP hub id "
            "(cached, or with hub access), a folder saved with save_pretrained, or stand_in='tiny' offline."
        ) from err


def load_clip_backbone(
    backbone: str | os.PathLike[str] | None = None,
    *,
    stand_in: str | None = None,
    processor: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
) -> ClipBackbone:
    """Load a CLIP backbone (float32, evaluation mode) on ``device``.

    Args:
        backbone: hub id or local folder (default: see :func:`resolve_backbone`).
        stand_in: ``"tiny"`` (or ``"toy"``) for the tiny random CLIP; ``"none"`` for a real one.
        processor: where the processor comes from when it is not beside the model (PickScore's model repo,
            for example, uses the processor of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``).
        device: ``"cuda"``, ``"mps"`` or ``"cpu"`` (default: the best available).

    Raises:
        ConfigurationError: for conflicting arguments or a backbone that cannot be loaded.
    """
    name, resolved_stand_in = resolve_backbone(backbone, stand_in)
    if name is None:
        # Lazy: tiny_clip imports transformers (see _load).
        from nbhelpers.quality.tiny_clip import TINY_CLIP_NAME, tiny_clip_path

        source = os.fspath(tiny_clip_path())
        name = TINY_CLIP_NAME
    else:
        folder = Path(name).expanduser()
        source = os.fspath(folder) if folder.is_dir() else name
    processor_source = os.fspath(processor) if processor is not None else source
    model, clip_processor = _load(source, processor_source)
    target = pick_device(device)
    return ClipBackbone(
        name=name,
        stand_in=resolved_stand_in,
        model=TensorFeaturesCLIP(model.to(target).eval()),
        processor=clip_processor,
        device=target,
    )
