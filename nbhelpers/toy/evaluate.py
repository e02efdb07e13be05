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
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from nbhelpers.toy.shapes import BACKGROUNDS, COLOURS, Scene, all_captions

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
        [
            rgb[:frame].reshape(-1, 3),
            rgb[-frame:].reshape(-1, 3),
            rgb[:, :frame].reshape(-1, 3),
            rgb[:, -frame:].reshape(-1, 3),
        ]
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


def lesson_scenes() -> list[Scene]:
    """One scene per caption of the data set (36), centred: the prompts the toy models are scored on."""

    return [Scene(shape=s, colour=c, background=b) for c, s, b in all_captions()]


def score_pipeline(
    pipe: Any,
    scenes: Sequence[Scene] | None = None,
    seeds: Sequence[int] = (0, 1),
    guidance_scale: float = 5.0,
    num_inference_steps: int = 20,
    batch_size: int = 36,
) -> dict[str, float]:
    """Generate every scene's caption once per seed and return :func:`accuracy` of the pictures.

    ``pipe`` is a toy pipeline (64 px). Each picture's generator is seeded on the CPU with its seed, so a
    score is the same whatever the batch size.
    """
    # Lazy: reading and drawing scenes (quality grid, notebooks) needs no torch.
    import torch

    scenes = list(scenes) if scenes is not None else lesson_scenes()
    jobs = [(scene, seed) for seed in seeds for scene in scenes]
    images: list[Image.Image] = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        output = pipe(
            prompt=[scene.caption for scene, _ in chunk],
            generator=[torch.Generator().manual_seed(seed) for _, seed in chunk],
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            height=64,
            width=64,
        )
        images.extend(output.images)
    return accuracy(images, [scene for scene, _ in jobs])


#: The layer groups :func:`shape_word_attention` reads a word's heat map from: ``"default"`` is DAAM's own rule
#: (the down and up blocks' maps, as the reference aggregates them at 512 px), ``"coarsest"`` the maps of the
#: coarsest resolution the UNet attends at, mid-block included (4x4 in the 64 px toy models), where a small
#: model decides its layout.
ATTENTION_VIEWS = ("default", "coarsest")


def shape_word_attention(
    pipe: Any,
    scene: Scene,
    seed: int = 0,
    guidance_scale: float = 5.0,
    num_inference_steps: int = 20,
) -> tuple[dict[str, float], Image.Image, dict[str, np.ndarray]]:
    """Generate ``scene``'s caption under a DAAM trace and measure where its shape word attended.

    Returns ``(ratios, image, heat_maps)``, each keyed by :data:`ATTENTION_VIEWS`: :func:`attention_ratio` of the
    shape word's heat map from those layers (upsampled to the picture, ``(64, 64)``) against the shape
    :func:`read_scene` finds in the generated picture. Raises ``ValueError`` when the picture shows no shape.
    """
    # Lazy: reading and drawing scenes (quality grid, notebooks) needs no torch.
    import torch

    from nbhelpers.daam import set_seed, trace  # (lazy, see above)

    with torch.no_grad(), trace(pipe) as tracer:
        image = pipe(
            scene.caption,
            generator=set_seed(seed),
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            height=64,
            width=64,
        ).images[0]
    reading = read_scene(image)
    if reading.shape == "none":
        raise ValueError(f"The picture for {scene.caption!r} (seed {seed}) shows no shape to score attention on.")
    options: dict[str, dict[str, Any]] = {
        "default": {},
        "coarsest": {"factors": [max(tracer.factors())], "include_mid_block": True},
    }
    heat_maps = {
        view: tracer.compute_global_heat_map(**options[view])
        .compute_word_heat_map(scene.shape)
        .expand_as(image, absolute=True)
        .numpy()
        for view in ATTENTION_VIEWS
    }
    return {view: attention_ratio(heat, reading.mask) for view, heat in heat_maps.items()}, image, heat_maps


def shape_likeness(image: Image.Image | np.ndarray, shape: str = "star") -> float:
    """How much the drawn blob looks like ``shape``: the IoU of :func:`read_scene`'s mask with ``shape``'s outline
    stretched over the blob's bounding box (1: the same outline; 0: no shape in the picture). Used to check that
    DreamBooth taught a toy model a shape it never saw (a star)."""

    reading = read_scene(image)
    if reading.shape == "none":
        return 0.0
    rows, cols = np.nonzero(reading.mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    _, outline = Scene(shape=shape, colour="red", background="black", extent=0.45).render(size=256)
    outline_rows, outline_cols = np.nonzero(outline)
    outline = outline[outline_rows.min() : outline_rows.max() + 1, outline_cols.min() : outline_cols.max() + 1]
    stretched = Image.fromarray(outline).resize((int(right - left), int(bottom - top)), Image.Resampling.NEAREST)
    ideal = np.zeros_like(reading.mask)
    ideal[top:bottom, left:right] = np.asarray(stretched)
    return float(np.logical_and(ideal, reading.mask).sum() / np.logical_or(ideal, reading.mask).sum())
