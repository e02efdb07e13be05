"""DAAM heat maps: aggregating attention maps onto the latent grid, per-word maps, plots and saved files.

- :func:`aggregate_maps`: the reference's aggregation (upsample every map bicubically onto the latent grid,
  clamp at 0, average), with each map placed by its exact factor (:mod:`~nbhelpers.daam.alignment`).
- :class:`GlobalHeatMap`: one map per token of a prompt; :meth:`GlobalHeatMap.compute_word_heat_map` gives a
  :class:`WordHeatMap`, which draws itself over the image (:meth:`WordHeatMap.plot_overlay`) and saves itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nbhelpers.atomic import atomic_open
from nbhelpers.daam.alignment import upsample_to_latent
from nbhelpers.daam.words import PromptWord, kept_token_count, prompt_words, word_token_positions

# matplotlib is imported inside the plotting functions: it is slow to import, and tracing alone (the toy model's
# evaluation) never plots.

__all__ = ["COLORBAR_LABEL", "SHARED_COLORBAR_LABEL", "GlobalHeatMap", "WordHeatMap", "aggregate_maps"]

#: Colour bar label of an overlay of one map, min-max normalised before it is drawn.
COLORBAR_LABEL = "attention to the word (min-max normalised)"
#: Colour bar label of panels drawn on one scale (``vmax``): their values, not each one's own range.
SHARED_COLORBAR_LABEL = "attention to the word (one scale for every panel)"


def aggregate_maps(
    groups: Iterable[tuple[torch.Tensor, int]], latent_size: tuple[int, int], count: int, clamp_each: bool = True
) -> torch.Tensor | None:
    """Upsample maps onto the latent grid, clamp at 0 and take the mean, as the reference daam 0.2.0 does.

    Args:
        groups: ``(maps, factor)`` pairs; ``maps`` is ``(n, tokens, h, w)`` at that factor (``n`` heads, or
            already-summed maps).
        latent_size: ``(latent_h, latent_w)``.
        count: how many maps the mean is over (the reference: one per kept ``(factor, layer, head)``).
        clamp_each: clamp each upsampled map (the reference); ``False`` clamps only the sum, for groups that
            are already sums over heads and layers (per-step maps).

    Returns:
        ``(tokens, latent_h, latent_w)``, or ``None`` when ``groups`` is empty.
    """
    total: torch.Tensor | None = None
    for maps, factor in groups:
        upsampled = upsample_to_latent(maps, factor, latent_size)
        if clamp_each:
            upsampled = upsampled.clamp_(min=0)
        summed = upsampled.sum(0)
        total = summed if total is None else total + summed
    if total is None:
        return None
    if not clamp_each:
        total = total.clamp_(min=0)
    return total / count


def _min_max(values: torch.Tensor) -> torch.Tensor:
    return (values - values.min()) / (values.max() - values.min() + 1e-8)


class WordHeatMap:
    """The heat map of one word: ``value`` is a non-negative ``(latent_h, latent_w)`` tensor (64x64 at 512 px)."""

    def __init__(self, heatmap: torch.Tensor, word: str | None = None, word_idx: int | None = None) -> None:
        self.heatmap = heatmap
        self.word = word
        self.word_idx = word_idx

    @property
    def value(self) -> torch.Tensor:
        """The map at latent resolution, ``(latent_h, latent_w)``, float32 on the CPU."""
        return self.heatmap

    def expand_as(self, image: Image.Image, absolute: bool = False, threshold: float | None = None) -> torch.Tensor:
        """Upsample bicubically to the image's ``(height, width)``; min-max normalised unless ``absolute``."""
        width, height = image.size
        expanded = F.interpolate(self.heatmap[None, None].float(), size=(height, width), mode="bicubic")[0, 0]
        if not absolute:
            expanded = _min_max(expanded)
        if threshold is not None:
            expanded = (expanded > threshold).float()
        return expanded

    def plot_overlay(
        self,
        image: Image.Image,
        out_file: str | os.PathLike[str] | None = None,
        color_normalize: bool = True,
        ax: Any = None,
        colorbar: bool = False,
        vmax: float | None = None,
    ) -> Any:
        """Draw the map (jet colours) under the image, which fades where attention is high; return the axes.

        Args:
            image: the generated image.
            out_file: also save the figure there as PNG (atomically).
            color_normalize: stretch the colours over the map's range (the reference's default); ``False``
                pins them to 0..1.
            ax: matplotlib axes to draw on (default: a new figure).
            colorbar: add a colour bar labelled :data:`COLORBAR_LABEL` (:data:`SHARED_COLORBAR_LABEL` with
                ``vmax``).
            vmax: draw the map's own values on the scale 0..``vmax`` instead of min-max normalising it, so that
                panels drawn with the same ``vmax`` can be compared colour for colour (then one colour bar serves
                them all).
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 4))
        if vmax is not None:
            if not vmax > 0:
                raise ValueError(f"vmax must be above 0, not {vmax}.")
            values = self.expand_as(image, absolute=True).clamp(min=0)
            shown = ax.imshow(values.numpy(), cmap="jet", vmin=0.0, vmax=vmax)
            heat = (values / vmax).clamp(0, 1)
        else:
            heat = self.expand_as(image)
            if color_normalize:
                shown = ax.imshow(heat.numpy(), cmap="jet")
            else:
                shown = ax.imshow(heat.clamp(0, 1).numpy(), cmap="jet", vmin=0.0, vmax=1.0)
        pixels = torch.from_numpy(np.array(image.convert("RGB"))).float() / 255
        ax.imshow(torch.cat((pixels, (1 - heat).unsqueeze(-1)), dim=-1).numpy())
        ax.set_axis_off()
        if self.word is not None:
            ax.set_title(self.word)
        if colorbar:
            label = COLORBAR_LABEL if vmax is None else SHARED_COLORBAR_LABEL
            ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label=label)
        if out_file is not None:
            with atomic_open(out_file, "wb") as file:
                ax.figure.savefig(file, format="png", bbox_inches="tight")
        return ax

    def save(self, stem: str | os.PathLike[str], image: Image.Image | None = None) -> tuple[Path, Path]:
        """Save ``stem.npy`` (the latent-resolution map) and ``stem.png`` (the normalised map as a jet-coloured
        picture at the image's size, or at latent size without an image); both written atomically."""
        from matplotlib import colormaps

        stem = Path(stem)
        npy, png = stem.with_suffix(".npy"), stem.with_suffix(".png")
        with atomic_open(npy, "wb") as file:
            np.save(file, self.heatmap.numpy().astype(np.float32))
        heat = self.expand_as(image) if image is not None else _min_max(self.heatmap)
        rgb = (colormaps["jet"](heat.numpy())[..., :3] * 255).astype(np.uint8)
        with atomic_open(png, "wb") as file:
            Image.fromarray(rgb).save(file, format="PNG")
        return npy, png


class GlobalHeatMap:
    """Heat maps of every token of one prompt: ``heat_maps`` is ``(num_tokens + 2, latent_h, latent_w)``.

    Row 0 is the start token, rows 1..n the prompt's tokens, the last row the first end/padding token. A
    prompt longer than the text encoder's limit keeps only the tokens it read (75 for CLIP).
    """

    def __init__(self, tokenizer: Any, prompt: str, heat_maps: torch.Tensor) -> None:
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.heat_maps = heat_maps

    def words(self) -> list[PromptWord]:
        """The prompt's words as CLIP splits them, with their token rows; words past the token limit are left out."""
        kept = kept_token_count(self.tokenizer)
        return [w for w in prompt_words(self.tokenizer, self.prompt) if max(w.token_positions) <= kept]

    def compute_word_heat_map(
        self, word: str, word_idx: int | None = None, offset_idx: int = 0, occurrence: int | None = None
    ) -> WordHeatMap:
        """Mean of the maps of ``word``'s tokens (all its occurrences unless ``occurrence`` picks one).

        Raises:
            WordNotInPromptError: ``word`` is not in the prompt; the message lists the prompt's words.
            WordCutOffError: ``word`` comes only after the token limit, where the prompt was cut.
        """
        rows = word_token_positions(self.tokenizer, self.prompt, word, word_idx, offset_idx, occurrence)
        return WordHeatMap(self.heat_maps[rows].mean(0), word, word_idx)

    def plot_word_grid(
        self,
        image: Image.Image,
        words: Sequence[str] | None = None,
        cols: int = 4,
        size: float = 3.0,
        title: str | None = None,
        colorbar: bool = True,
        label: str = SHARED_COLORBAR_LABEL,
    ) -> Any:
        """One overlay per word (default: every distinct word of the prompt) in a grid; returns the figure.

        Every panel is drawn on one scale, 0 to the largest value of the words shown (not each map min-max
        normalised on its own), so colours compare across words and one colour bar serves the grid.

        Args:
            title: the figure's title (say there if the weights are tiny and random).
            colorbar: add the grid's colour bar, labelled ``label`` (say the maps' unit there, e.g. after
                :func:`nbhelpers.daam.measures.attention_share`).
        """
        import matplotlib.pyplot as plt

        chosen = list(dict.fromkeys(words if words is not None else [w.text for w in self.words()]))
        if not chosen:
            raise ValueError("The prompt has no words to plot.")
        cols = min(cols, len(chosen))
        rows = math.ceil(len(chosen) / cols)
        figure, axes = plt.subplots(
            rows,
            cols,
            figsize=(size * cols + (1.0 if colorbar else 0.0), size * rows),
            squeeze=False,
            layout="constrained",
        )
        for ax in axes.flat[len(chosen) :]:
            ax.set_axis_off()
        maps = [self.compute_word_heat_map(word) for word in chosen]
        vmax = max(float(m.expand_as(image, absolute=True).max()) for m in maps)
        for ax, word_map in zip(axes.flat, maps, strict=False):
            word_map.plot_overlay(image, ax=ax, vmax=vmax if vmax > 0 else 1.0)
        if colorbar:
            figure.colorbar(axes.flat[0].images[0], ax=axes, shrink=0.8, label=label)
        if title is not None:
            figure.suptitle(title)
        return figure

    def save_words(self, folder: str | os.PathLike[str], image: Image.Image | None = None) -> list[Path]:
        """Save every distinct word's map as ``<folder>/<index>-<word>.npy`` and ``.png``; return the paths."""
        paths: list[Path] = []
        for index, word in enumerate(dict.fromkeys(w.text for w in self.words())):
            safe = "".join(c if c.isalnum() else "_" for c in word)
            paths.extend(self.compute_word_heat_map(word).save(Path(folder) / f"{index:02d}-{safe}", image))
        return paths
