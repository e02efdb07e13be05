"""Read a "shapes" picture back: which colour, shape and background does it show, and where is the shape.

These simple checks turn a lesson into numbers: the accuracy of a toy model's pictures against their
prompts, the gain from classifier-free guidance, and whether a word's attention map falls on the shape.
They work on the clean data set and on generated pictures (soft edges, some noise): the background is the
palette colour nearest the border's median, the shape is the largest blob that differs from it, its colour
the nearest palette colour, and its kind follows from how much of its bounding box it fills (square about
1, circle about pi/4, triangle about 1/2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from nbhelpers.toy.shapes import BACKGROUNDS, COLOURS, Scene

#: A pixel belongs to the foreground when its RGB distance from the background colour exceeds this.
FOREGROUND_DISTANCE = 90.0
#: Fill ratio of the bounding box above which a blob is a square, and below which it is a triangle.
SQUARE_ABOVE, TRIANGLE_BELOW = 0.9, 0.66


@dataclass(frozen=True)
class Reading:
    """What :func:`read_scene` saw in a picture.

    Attributes:
        colour, shape, background: the words the picture shows (``shape`` is ``"none"`` when no blob of at
            least 2% of the image differs from the background).
        mask: boolean ``(H, W)`` mask of the shape.
        fill_ratio: the shape's area over its bounding box's.
    """

    colour: str
    shape: str
    background: str
    mask: np.ndarray
    fill_ratio: float

    def matches(self, scene: Scene) -> dict[str, bool]:
        """``{"colour": ..., "shape": ..., "background": ...}``: which words agree with ``scene``."""
        return {
            "colour": self.colour == scene.colour,
            "shape": self.shape == scene.shape,
            "background": self.background == scene.background,
        }


def _nearest(palette: dict[str, tuple[int, int, int]], rgb: np.ndarray) -> str:
    names = list(palette)
    distances = [np.linalg.norm(rgb - np.asarray(palette[name], dtype=float)) for name in names]
    return names[int(np.argmin(distances))]


def read_scene(image: Image.Image | np.ndarray) -> Reading:
    """Read colour, shape and background from an RGB picture (PIL image or ``(H, W, 3)`` array, 0-255)."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=float)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"Expected an RGB picture of shape (H, W, 3); got {rgb.shape}.")
    height, width = rgb.shape[:2]
    frame = max(1, min(height, width) // 32)
    border = np.concatenate(
        [rgb[:frame].reshape(-1, 3), rgb[-frame:].reshape(-1, 3), rgb[:, :frame].reshape(-1, 3),
         rgb[:, -frame:].reshape(-1, 3)]
    )
    background = _nearest(BACKGROUNDS, np.median(border, axis=0))
    distance = np.linalg.norm(rgb - np.asarray(BACKGROUNDS[background], dtype=float), axis=2)
    labels, count = ndimage.label(distance > FOREGROUND_DISTANCE)
    if count == 0:
        return Reading("none", "none", background, np.zeros((height, width), bool), 0.0)
    sizes = ndimage.sum(np.ones_like(labels), labels, index=range(1, count + 1))
    mask = labels == int(np.argmax(sizes)) + 1
    if mask.sum() < 0.02 * height * width:
        return Reading("none", "none", background, mask, 0.0)
    mask = ndimage.binary_fill_holes(mask)
    rows, cols = np.nonzero(mask)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    fill_ratio = float(mask.sum() / box)
    if fill_ratio > SQUARE_ABOVE:
        shape = "square"
    elif fill_ratio < TRIANGLE_BELOW:
        shape = "triangle"
    else:
        shape = "circle"
    return Reading(_nearest(COLOURS, np.median(rgb[mask], axis=0)), shape, background, mask, fill_ratio)


def accuracy(images: Sequence[Image.Image | np.ndarray], scenes: Sequence[Scene]) -> dict[str, float]:
    """Share of pictures whose colour, shape, background (and all three) agree with their scenes."""
    if len(images) != len(scenes) or not images:
        raise ValueError(f"Need as many scenes as images (got {len(images)} images, {len(scenes)} scenes).")
    hits = [read_scene(image).matches(scene) for image, scene in zip(images, scenes, strict=True)]
    result = {word: float(np.mean([h[word] for h in hits])) for word in ("colour", "shape", "background")}
    result["all"] = float(np.mean([all(h.values()) for h in hits]))
    return result


def attention_ratio(heat_map: np.ndarray, mask: np.ndarray) -> float:
    """How much of a word's attention falls inside the shape, relative to the shape's area share.

    ``heat_map`` and ``mask`` are ``(H, W)`` (the heat map is resized to the mask's size by the caller). 1 means
    no preference; above 1 the word attends to the shape more than to an average pixel.
    """
    heat = np.clip(np.asarray(heat_map, dtype=float), 0, None)
    if heat.shape != mask.shape:
        raise ValueError(f"heat_map {heat.shape} and mask {mask.shape} must have the same shape.")
    if heat.sum() == 0 or not mask.any():
        raise ValueError("attention_ratio needs a non-zero heat map and a non-empty mask.")
    return float((heat[mask].sum() / heat.sum()) / mask.mean())
