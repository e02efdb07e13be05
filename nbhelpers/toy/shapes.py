"""The "shapes" data set: one coloured circle, square or triangle on a plain background, with its caption.

Small enough to train a text-to-image model on a CPU in minutes, rich enough to check what a tutorial
teaches: does the picture follow the words (colour, shape, background), does guidance raise adherence, does
the word "circle" attend to the circle. Captions read "a red circle on a white background".

Images are ``size x size`` RGB (64 px by default). Shapes are axis-aligned, filled, with a random centre and
size; the mask of every scene is returned too, so attention maps can be scored against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

#: Foreground colours, chosen far apart in RGB and from every background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 40),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: Shapes the toy models never saw: new subjects for DreamBooth (notebook 03) to teach them.
NEW_SUBJECT_SHAPES: tuple[str, ...] = ("star",)
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
DEFAULT_SIZE = 64


@dataclass(frozen=True)
class Scene:
    """One picture of the data set.

    Attributes:
        shape: one of :data:`SHAPES`.
        colour: one of :data:`COLOURS`.
        background: one of :data:`BACKGROUNDS`.
        centre: ``(x, y)`` of the shape's centre as a fraction of the image side, each in ``[0, 1]``.
        extent: half the shape's side (or its radius) as a fraction of the image side.
    """

    shape: str
    colour: str
    background: str
    centre: tuple[float, float] = (0.5, 0.5)
    extent: float = 0.25

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.shape, SHAPES + NEW_SUBJECT_SHAPES, "shape"),
            (self.colour, tuple(COLOURS), "colour"),
            (self.background, tuple(BACKGROUNDS), "background"),
        ):
            if value not in allowed:
                raise ValueError(f"Unknown {what} {value!r}; choose one of {', '.join(allowed)}.")

    @property
    def caption(self) -> str:
        """``"a red circle on a white background"``."""
        return f"a {self.colour} {self.shape} on a {self.background} background"

    def render(self, size: int = DEFAULT_SIZE) -> tuple[Image.Image, np.ndarray]:
        """The RGB picture and its boolean shape mask, both ``size x size``."""
        image = Image.new("RGB", (size, size), BACKGROUNDS[self.background])
        mask_image = Image.new("L", (size, size), 0)
        cx, cy = self.centre[0] * size, self.centre[1] * size
        r = self.extent * size
        for canvas, fill in ((ImageDraw.Draw(image), COLOURS[self.colour]), (ImageDraw.Draw(mask_image), 255)):
            if self.shape == "circle":
                canvas.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
            elif self.shape == "square":
                canvas.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
            elif self.shape == "triangle":  # an upright triangle inscribed in the same box
                canvas.polygon(((cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)), fill=fill)
            else:  # a five-pointed star, points on the circle of radius r
                canvas.polygon(star_points(cx, cy, r), fill=fill)
        return image, np.asarray(mask_image) > 127


def star_points(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The ten corners of an upright five-pointed star with outer radius ``r`` (inner radius 0.45 r)."""
    corners = []
    for index in range(10):
        radius = r if index % 2 == 0 else 0.45 * r
        angle = -math.pi / 2 + index * math.pi / 5
        corners.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return corners


def all_captions() -> list[tuple[str, str, str]]:
    """Every ``(colour, shape, background)`` combination (36), in a fixed order."""
    return [(c, s, b) for b in BACKGROUNDS for s in SHAPES for c in COLOURS]


def random_scene(rng: np.random.Generator) -> Scene:
    """A scene with uniformly drawn words, size between 0.18 and 0.34 of the side, fully inside the image."""
    extent = float(rng.uniform(0.18, 0.34))
    low, high = extent + 0.02, 1 - extent - 0.02
    return Scene(
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        colour=tuple(COLOURS)[int(rng.integers(len(COLOURS)))],
        background=tuple(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))],
        centre=(float(rng.uniform(low, high)), float(rng.uniform(low, high))),
        extent=extent,
    )


def make_scenes(count: int, seed: int = 0) -> list[Scene]:
    """``count`` random scenes, the same for the same seed on every machine (NumPy's PCG64)."""
    if count < 1:
        raise ValueError(f"count must be at least 1; got {count}.")
    rng = np.random.default_rng(seed)
    return [random_scene(rng) for _ in range(count)]


def area_share(scene: Scene) -> float:
    """The fraction of the image a scene's shape covers, from its geometry (circle pi r^2, triangle half)."""
    side = 2 * scene.extent
    factor = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}[scene.shape]
    return factor * side * side
