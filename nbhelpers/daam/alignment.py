"""Where an attention map sits on the latent grid: its exact factor, and upsampling it onto the latent.

A UNet halves the spatial size at every down-sampling step, rounding up (a stride-2 convolution with padding
1 turns ``L`` pixels into ``ceil(L / 2)``), and the up blocks come back through the same sizes. So a map
made ``k`` levels down has exactly ``ceil(latent_h / 2**k) x ceil(latent_w / 2**k)`` cells, and each cell
covers a ``2**k x 2**k`` square of latent pixels, the last row and column reaching past the latent's edge
when the latent side is not a multiple of ``2**k`` (a 65-pixel side gives a 33-cell map covering 66).

The *factor* of a map is that ``2**k``. It is exact, read off the map's own height and width (the spatial
shape entering its transformer), never guessed from its number of tokens: a map whose shape fits no factor
is *unaligned* (:func:`map_factor` returns ``None``) and is reported rather than stretched onto the latent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Largest factor looked for: 2**7, far past the 3 down-sampling steps of SD and DeciDiffusion.
MAX_FACTOR = 128


def _cells(side: int, factor: int) -> int:
    return -(-side // factor)


def map_factor(latent_size: tuple[int, int], map_size: tuple[int, int]) -> int | None:
    """The power of two ``f`` with ``map_size == (ceil(latent_h / f), ceil(latent_w / f))``, or ``None``.

    Args:
        latent_size: ``(latent_h, latent_w)`` of the UNet's input sample (64x64 for a 512 px SD image).
        map_size: ``(h, w)`` of the map, the spatial shape entering the transformer that made it.

    Returns:
        The smallest such factor (only a 1x1 map of a latent no larger than the factor fits several), or
        ``None`` when the map does not sit on the latent grid at any factor (an unaligned map).
    """
    latent_h, latent_w = latent_size
    height, width = map_size
    factor = 1
    while factor <= MAX_FACTOR:
        if _cells(latent_h, factor) == height and _cells(latent_w, factor) == width:
            return factor
        factor *= 2
    return None


def upsample_to_latent(maps: torch.Tensor, factor: int, latent_size: tuple[int, int]) -> torch.Tensor:
    """Upsample maps of one factor bicubically onto the latent grid, cell for cell.

    Each map cell becomes a ``factor x factor`` square (the map is upsampled to ``(h * factor, w * factor)``)
    and the part past the latent's edge is cut off, so a cell lands on the latent pixels it was computed
    from. When the latent side is a multiple of the factor this is exactly the reference's upsampling to the
    latent size. Negative values (bicubic undershoot) are kept: the caller clamps.

    Args:
        maps: ``(..., h, w)`` with ``h == ceil(latent_h / factor)`` and ``w == ceil(latent_w / factor)``.
        factor: the maps' factor from :func:`map_factor`.
        latent_size: ``(latent_h, latent_w)``.

    Returns:
        ``(..., latent_h, latent_w)`` float tensor.
    """
    latent_h, latent_w = latent_size
    height, width = maps.shape[-2:]
    if (height, width) != (_cells(latent_h, factor), _cells(latent_w, factor)):
        raise ValueError(
            f"A {height}x{width} map is not at factor {factor} of a {latent_h}x{latent_w} latent "
            f"(that would be {_cells(latent_h, factor)}x{_cells(latent_w, factor)})."
        )
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, height, width).float()
    if factor > 1:
        flat = F.interpolate(flat, size=(height * factor, width * factor), mode="bicubic")
    return flat[..., :latent_h, :latent_w].reshape(*lead, latent_h, latent_w)
