"""Showing, gridding and saving generated images (with their generation settings in the PNG metadata)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from nbhelpers.atomic import atomic_open
from nbhelpers.checks import whole_number
from nbhelpers.errors import ConfigurationError

ImageLike = Image.Image | np.ndarray

METADATA_KEY = "nbhelpers"


def to_uint8_array(image: ImageLike) -> np.ndarray:
    """Convert a PIL image or an array (HxWxC, uint8 0-255 or float 0-1) to an ``(H, W, 3)`` uint8 array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Expected an image of shape (H, W, C) with C in 1, 3, 4; got {array.shape}.")
    if array.dtype != np.uint8:
        array = (np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0) * 255).round().astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array[..., :3]


def to_pil(image: ImageLike) -> Image.Image:
    """Convert a PIL image or an array (see :func:`to_uint8_array`) to an RGB PIL image."""
    return image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(to_uint8_array(image))


def show_images(
    images: Sequence[ImageLike],
    labels: Sequence[str] | None = None,
    *,
    img_width: int = 256,
    max_images: int = 64,
) -> None:
    """Display images in a notebook as an ipyplot grid.

    Works with lists of PIL images, which ipyplot 1.1.2 cannot draw on current numpy/Pillow (it fails with
    "Cannot handle this data type: (1, 1, 3), |O"): every image is converted to a uint8 array first.
    """
    try:
        # Lazy: ipyplot is the optional [notebooks] extra.
        import ipyplot
    except ImportError as err:  # a notebook-only dependency, in the [notebooks] extra
        raise ImportError(
            'show_images needs ipyplot: pip install -e ".[notebooks]" (or run the notebook\'s first cell).'
        ) from err

    if len(images) == 0:
        raise ValueError("show_images() got no images to show.")
    whole_number("img_width", img_width, 1, 4096, unit="pixels")
    whole_number("max_images", max_images, 1)
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"Got {len(images)} images but {len(labels)} labels; give one label per image.")
    arrays = [to_uint8_array(image) for image in images]
    shown_labels = [str(label) for label in labels] if labels is not None else [str(i) for i in range(len(arrays))]
    ipyplot.plot_images(arrays, labels=shown_labels, img_width=img_width, max_images=max_images)


def image_grid(
    images: Sequence[ImageLike],
    rows: int | None = None,
    cols: int | None = None,
    *,
    padding: int = 0,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Paste images (all resized to the first one's size) into one ``rows x cols`` grid image.

    With neither ``rows`` nor ``cols`` the grid is as square as possible; with one, the other follows.
    """
    if len(images) == 0:
        raise ValueError("image_grid() got no images.")
    count = len(images)
    for name, value in (("rows", rows), ("cols", cols)):
        if value is not None:
            whole_number(name, value, 1)
    whole_number("padding", padding, 0, 1024, unit="pixels")
    if rows is None and cols is None:
        cols = math.ceil(math.sqrt(count))
    if cols is None:
        cols = math.ceil(count / rows)  # type: ignore[operator]
    if rows is None:
        rows = math.ceil(count / cols)
    if rows * cols < count:
        raise ValueError(f"A {rows}x{cols} grid holds {rows * cols} images but {count} were given.")
    tiles = [to_pil(image) for image in images]
    width, height = tiles[0].size
    grid = Image.new("RGB", (cols * width + (cols - 1) * padding, rows * height + (rows - 1) * padding), background)
    for index, tile in enumerate(tiles):
        if tile.size != (width, height):
            tile = tile.resize((width, height))
        row, col = divmod(index, cols)
        grid.paste(tile, (col * (width + padding), row * (height + padding)))
    return grid


def save_image(
    image: ImageLike,
    path: str | os.PathLike[str],
    *,
    prompt: str,
    seed: int | None,
    steps: int | None,
    model: str,
    **extra: Any,
) -> Path:
    """Write ``image`` as a PNG with its generation settings in the metadata, atomically.

    The settings are stored as JSON under the PNG text key ``"nbhelpers"`` and, for other tools, as
    plain ``prompt``/``seed``/``steps``/``model`` text keys. The file appears only when complete (written to
    a temporary file in the same folder, then renamed), so an interrupted run never leaves half a PNG.
    ``extra`` values must be JSON-serialisable (e.g. ``guidance_scale=7.5``).
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigurationError(f"save_image() writes PNG files; give a path ending in .png, not {path.name!r}.")
    if path.is_dir():
        raise ConfigurationError(f"{path} is a folder; give the path of a .png file to write.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigurationError(
            f"Cannot create the folder {path.parent}: a file is in the way. Choose another folder."
        ) from None
    settings = {"prompt": prompt, "seed": seed, "steps": steps, "model": model, **extra}
    try:
        text = json.dumps(settings, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ConfigurationError(
            f"The settings stored in a PNG must be JSON values (numbers, strings, lists); {err}."
        ) from None
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, text)
    for key in ("prompt", "seed", "steps", "model"):
        info.add_text(key, str(settings[key]))
    with atomic_open(path, "wb") as file:
        to_pil(image).save(file, format="PNG", pnginfo=info)
    return path


def read_image_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the generation settings :func:`save_image` stored in a PNG (empty dict if there are none).

    Raises:
        ConfigurationError: ``path`` is not a readable image, or its settings are not the JSON object
            :func:`save_image` writes.
    """
    try:
        with Image.open(path) as image:
            text = image.info.get(METADATA_KEY)
    except (OSError, Image.DecompressionBombError) as err:  # a folder, a missing file, not an image
        raise ConfigurationError(f"Cannot read {path} as an image: {err}.") from None
    if not text:
        return {}
    try:
        settings = json.loads(text)
    except json.JSONDecodeError:
        settings = None
    if not isinstance(settings, dict):
        raise ConfigurationError(f"{path} carries {METADATA_KEY!r} metadata that is not a JSON object of settings.")
    return settings
