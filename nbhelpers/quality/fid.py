"""FID (Fréchet Inception Distance): an optional, larger run; never part of a default evaluation.

FID compares two *sets* of pictures, not a picture with its prompt: the Fréchet distance between Gaussians fitted
to their Inception-v3 features (2048 numbers per picture). It is the metric DeciDiffusion's model card cites
(images after 30 steps "achieve comparable FID scores" to SD v1.5 after 50), but no value is published there.

Why it is not a default:

- it needs a reference set of real pictures matching the prompts' distribution (e.g. COCO captions and their
  photos), which this project does not ship;
- it needs thousands of pictures per set: the covariance of 2048 features from a few dozen pictures is
  rank-deficient and the distance strongly biased by the sample size, so small-sample values are not comparable;
- Inception features come from ImageNet classification and suit LAION-trained models' pictures poorly (diffusers'
  "Evaluating Diffusion Models" page says the same).

torchmetrics' ``FrechetInceptionDistance`` computes it; its Inception network comes from ``torch-fidelity``
(``pip install 'diffusion-nbhelpers[quality-fid]'``), whose weights download from GitHub on first use. A custom
feature network (any ``torch.nn.Module`` mapping a ``uint8`` batch to features) needs neither.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from nbhelpers.device import pick_device
from nbhelpers.quality.images import Picture, as_uint8_pictures

#: Inception-v3's pool features: a set smaller than this gives a rank-deficient covariance.
INCEPTION_FEATURES = 2048


def _fid_metric(feature: int | torch.nn.Module) -> Any:  # FrechetInceptionDistance, imported only when used
    try:
        # Lazy: torchmetrics is the optional [quality] extra.
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE  # (lazy, see above)
    except ImportError as err:
        raise ImportError("FID needs torchmetrics: pip install 'diffusion-nbhelpers[quality-fid]'.") from err
    if isinstance(feature, int) and not _TORCH_FIDELITY_AVAILABLE:
        raise ImportError(
            "FID with the Inception network needs torch-fidelity: pip install 'diffusion-nbhelpers[quality-fid]' "
            "(or pass feature=<your torch.nn.Module>)."
        )
    return FrechetInceptionDistance(feature=feature)


def _add(metric: Any, pictures: list[torch.Tensor], *, real: bool, batch_size: int) -> None:
    sizes = {tuple(picture.shape) for picture in pictures}
    if len(sizes) > 1:
        which = "reference" if real else "generated"
        raise ValueError(f"The {which} pictures differ in size ({sorted(sizes)}); resize them to one size first.")
    for start in range(0, len(pictures), batch_size):
        metric.update(torch.stack(pictures[start : start + batch_size]), real=real)


def frechet_inception_distance(
    reference: Picture | Sequence[Picture],
    generated: Picture | Sequence[Picture],
    *,
    feature: int | torch.nn.Module = INCEPTION_FEATURES,
    device: str | torch.device | None = None,
    batch_size: int = 32,
) -> float:
    """FID between a reference set of real pictures and a generated set (lower is closer).

    Args:
        reference, generated: pictures in any form :func:`~nbhelpers.quality.images.as_uint8_pictures` takes;
            within a set, one size (the two sets may differ: Inception resizes to 299 px).
        feature: Inception feature layer (64, 192, 768 or 2048) or a custom feature network.
        device: where features are computed (default: the best available).
        batch_size: pictures per forward pass.

    Raises:
        ImportError: when torchmetrics, or torch-fidelity for the Inception network, is missing.
        ValueError: for fewer than 2 pictures in a set, or sizes that differ within a set.

    Warns:
        UserWarning: when a set has fewer pictures than features (the value is then strongly biased).
    """
    target = pick_device(device)
    sets = {"reference": as_uint8_pictures(reference, target), "generated": as_uint8_pictures(generated, target)}
    for name, pictures in sets.items():
        if len(pictures) < 2:
            raise ValueError(f"FID needs at least 2 {name} pictures; got {len(pictures)}.")
    metric = _fid_metric(feature).to(target)
    smallest = min(len(pictures) for pictures in sets.values())
    if isinstance(feature, int) and smallest < feature:
        warnings.warn(
            f"FID from {smallest} pictures per set with {feature} features is strongly biased by the sample "
            "size; use thousands of pictures, and compare only values computed from equal set sizes.",
            UserWarning,
            stacklevel=2,
        )
    with torch.no_grad():
        _add(metric, sets["reference"], real=True, batch_size=batch_size)
        _add(metric, sets["generated"], real=False, batch_size=batch_size)
        return float(metric.compute())
