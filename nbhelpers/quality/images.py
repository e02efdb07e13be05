"""Pictures in the form torchmetrics' image metrics take: a list of ``uint8`` ``(3, H, W)`` tensors in ``[0, 255]``.

The metrics' CLIP image processor rescales by 1/255 and Inception's input is ``uint8`` too, so a float picture in
``[0, 1]`` passed through unchanged would be scored as nearly black. Everything the project makes is accepted and
converted once here: PIL images (``Generation.images``), tensors (``output_type="pt"``: float in ``[0, 1]``) and
NumPy arrays (``output_type="np"``: ``(H, W, 3)`` float in ``[0, 1]``), as one batch or a sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

#: One picture, or a batch of them (a 4-d tensor or array).
Picture = Image.Image | torch.Tensor | np.ndarray


def _as_chw_tensor(picture: Picture) -> torch.Tensor:
    if isinstance(picture, Image.Image):
        return torch.from_numpy(np.asarray(picture.convert("RGB")).copy()).permute(2, 0, 1)
    if isinstance(picture, np.ndarray):
        if picture.ndim != 3 or picture.shape[-1] not in (1, 3, 4):
            raise ValueError(f"A NumPy picture must be (H, W, 3); got shape {picture.shape}.")
        return torch.from_numpy(np.ascontiguousarray(picture[..., :3])).permute(2, 0, 1)
    if isinstance(picture, torch.Tensor):
        if picture.ndim != 3 or picture.shape[0] != 3:
            raise ValueError(f"A picture tensor must be (3, H, W); got shape {tuple(picture.shape)}.")
        return picture
    raise TypeError(f"Cannot score a {type(picture).__name__}: give PIL images, tensors or NumPy arrays.")


def _to_uint8(picture: torch.Tensor) -> torch.Tensor:
    if picture.dtype == torch.uint8:
        return picture
    if not picture.is_floating_point():
        raise ValueError(f"Picture tensors must be uint8 in [0, 255] or float in [0, 1]; got {picture.dtype}.")
    low, high = float(picture.min()), float(picture.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"Float pictures must lie in [0, 1] (diffusers' output_type='pt' or 'np'); got values in "
            f"[{low:.3g}, {high:.3g}]. Map [-1, 1] pictures with (x + 1) / 2 first."
        )
    return (picture * 255).round().to(torch.uint8)


def as_uint8_pictures(
    pictures: Picture | Sequence[Picture], device: torch.device | str | None = None
) -> list[torch.Tensor]:
    """Convert ``pictures`` into a list of ``uint8`` ``(3, H, W)`` tensors on ``device``.

    Args:
        pictures: a PIL image, a ``(3, H, W)`` or ``(N, 3, H, W)`` tensor, a ``(H, W, 3)`` or ``(N, H, W, 3)``
            array, or a sequence of any of these. Floats must be in ``[0, 1]``, integers in ``[0, 255]``.
        device: where the tensors go (default: where they are; CPU for PIL and NumPy).

    Raises:
        ValueError: for a shape or value range that is not a picture.
        TypeError: for anything else.
    """
    if isinstance(pictures, torch.Tensor) and pictures.ndim == 4:
        items: Sequence[Picture] = list(pictures)
    elif isinstance(pictures, np.ndarray) and pictures.ndim == 4:
        items = list(pictures)
    elif isinstance(pictures, (Image.Image, torch.Tensor, np.ndarray)):
        items = [pictures]
    else:
        items = pictures
    return [_to_uint8(_as_chw_tensor(item)).to(device) for item in items]
