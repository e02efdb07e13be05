"""DAAM word heat maps: which pixels each prompt word attended to (Tang et al., ACL 2023).

The same API as the reference package ``daam`` 0.2.0, working on current diffusers for SD v1.x, SD 2 and
DeciDiffusion's flexible UNet::

    from nbhelpers.daam import set_seed, trace

    gen = set_seed(0)
    with torch.no_grad(), trace(pipe) as tc:
        out = pipe("a dog on a bench", num_inference_steps=30, generator=gen)
        heat_map = tc.compute_global_heat_map()
        heat_map.compute_word_heat_map("dog").plot_overlay(out.images[0])

How it works: inside ``trace`` every cross-attention module (``attn2``) gets an attention processor that runs
the original processor (so fused SDPA kernels still do the real work) and, for the conditional half of the
classifier-free-guidance batch only, recomputes the small ``softmax(QK^T)`` of shape
``(heads, H*W, 77)``. Those probabilities are summed over denoising steps on the device, per layer, as they
come. On exit the original processors are put back, also after an exception.

Aggregation follows the reference: a map of side ``h`` has factor ``latent_side / h``; every kept
``(factor, layer, head)`` map, summed over steps, is upsampled bicubically to the latent size, clamped at 0
and averaged. Factor-8 maps (8x8 at 512 px) are left out by default, as in the reference. For SD v1.x at
512 px this keeps 64x64, 32x32 and 16x16 maps. DeciDiffusion's flexible UNet has no cross-attention at
64x64 (its attention sits at 32x32, 16x16 and 8x8), so the same rule keeps its 32x32 and 16x16 maps: the
8x8 maps are too coarse to localise objects, and leaving them out keeps both models on one rule. Pass
``factors=[2, 4, 8]`` to include them.
"""

from __future__ import annotations

import math
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from PIL import Image

from nbhelpers.atomic import atomic_open
from nbhelpers.daam.words import PromptWord, prompt_words, word_token_positions

__all__ = ["GlobalHeatMap", "WordHeatMap", "set_seed", "trace", "DEFAULT_SKIPPED_FACTORS"]

#: Map factors left out of the global heat map unless asked for (the reference skips 8x8 maps at 512 px).
DEFAULT_SKIPPED_FACTORS = frozenset({8})
CONTEXT_SIZE = 77


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a ``torch.Generator`` (on CUDA if available) seeded the same."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    generator = torch.Generator(device="cuda" if torch.cuda.is_available() else "cpu")
    return generator.manual_seed(seed)


def _atomic_write(path: Path, write: Any) -> Path:
    """Call ``write(file_object)`` on a temporary file next to ``path`` and rename it into place."""
    with atomic_open(path, "wb") as file:
        write(file)
    return path


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
            expanded = (expanded - expanded.min()) / (expanded.max() - expanded.min() + 1e-8)
        if threshold is not None:
            expanded = (expanded > threshold).float()
        return expanded

    def plot_overlay(
        self,
        image: Image.Image,
        out_file: str | os.PathLike[str] | None = None,
        color_normalize: bool = True,
        ax: Any = None,
    ) -> Any:
        """Draw the map (jet colours) under the image, which fades where attention is high; return the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 4))
        heat = self.expand_as(image)
        if color_normalize:
            ax.imshow(heat.numpy(), cmap="jet")
        else:
            ax.imshow(heat.clamp(0, 1).numpy(), cmap="jet", vmin=0.0, vmax=1.0)
        pixels = torch.from_numpy(np.array(image.convert("RGB"))).float() / 255
        ax.imshow(torch.cat((pixels, (1 - heat).unsqueeze(-1)), dim=-1).numpy())
        ax.set_axis_off()
        if self.word is not None:
            ax.set_title(self.word)
        if out_file is not None:
            figure = ax.figure
            _atomic_write(Path(out_file), lambda f: figure.savefig(f, format="png", bbox_inches="tight"))
        return ax

    def save(self, stem: str | os.PathLike[str], image: Image.Image | None = None) -> tuple[Path, Path]:
        """Save ``stem.npy`` (the latent-resolution map) and ``stem.png`` (the normalised map as a jet-coloured
        picture at the image's size, or at latent size without an image); both written atomically."""
        from matplotlib import colormaps

        stem = Path(stem)
        array = self.heatmap.numpy().astype(np.float32)
        npy = _atomic_write(stem.with_suffix(".npy"), lambda f: np.save(f, array))
        heat = self.expand_as(image) if image is not None else (self.heatmap - self.heatmap.min()) / (
            self.heatmap.max() - self.heatmap.min() + 1e-8
        )
        rgb = (colormaps["jet"](heat.numpy())[..., :3] * 255).astype(np.uint8)
        png = _atomic_write(stem.with_suffix(".png"), lambda f: Image.fromarray(rgb).save(f, format="PNG"))
        return npy, png


class GlobalHeatMap:
    """Heat maps of every token of one prompt: ``heat_maps`` is ``(num_tokens + 2, latent_h, latent_w)``.

    Row 0 is the start token, rows 1..n the prompt's tokens, the last row the first end/padding token.
    """

    def __init__(self, tokenizer: Any, prompt: str, heat_maps: torch.Tensor) -> None:
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.heat_maps = heat_maps

    def words(self) -> list[PromptWord]:
        """The prompt's words as CLIP splits them, with their token rows."""
        return prompt_words(self.tokenizer, self.prompt)

    def compute_word_heat_map(
        self, word: str, word_idx: int | None = None, offset_idx: int = 0, occurrence: int | None = None
    ) -> WordHeatMap:
        """Mean of the maps of ``word``'s tokens (all its occurrences unless ``occurrence`` picks one).

        Raises:
            WordNotInPromptError: ``word`` is not in the prompt; the message lists the prompt's words.
        """
        rows = word_token_positions(self.tokenizer, self.prompt, word, word_idx, offset_idx, occurrence)
        return WordHeatMap(self.heat_maps[rows].mean(0), word, word_idx)

    def plot_word_grid(
        self, image: Image.Image, words: Sequence[str] | None = None, cols: int = 4, size: float = 3.0
    ) -> Any:
        """One overlay per word (default: every distinct word of the prompt) in a grid; returns the figure."""
        import matplotlib.pyplot as plt

        chosen = list(dict.fromkeys(words if words is not None else [w.text for w in self.words()]))
        if not chosen:
            raise ValueError("The prompt has no words to plot.")
        cols = min(cols, len(chosen))
        rows = math.ceil(len(chosen) / cols)
        figure, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
        for ax in axes.flat[len(chosen) :]:
            ax.set_axis_off()
        for ax, word in zip(axes.flat, chosen, strict=False):
            self.compute_word_heat_map(word).plot_overlay(image, ax=ax)
        figure.tight_layout()
        return figure

    def save_words(self, folder: str | os.PathLike[str], image: Image.Image | None = None) -> list[Path]:
        """Save every distinct word's map as ``<folder>/<index>-<word>.npy`` and ``.png``; return the paths."""
        paths: list[Path] = []
        for index, word in enumerate(dict.fromkeys(w.text for w in self.words())):
            safe = "".join(c if c.isalnum() else "_" for c in word)
            paths.extend(self.compute_word_heat_map(word).save(Path(folder) / f"{index:02d}-{safe}", image))
        return paths


class _CrossAttentionCapture:
    """Attention processor: runs the original processor, then records the conditional cross-attention maps."""

    def __init__(self, original: Any, tracer: trace, layer_idx: int) -> None:
        self.original = original
        self.tracer = tracer
        self.layer_idx = layer_idx

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        output = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        if encoder_hidden_states is not None and encoder_hidden_states.shape[1] == CONTEXT_SIZE:
            with torch.no_grad():
                self.tracer._record(self.layer_idx, attn, hidden_states, encoder_hidden_states)
        return output


def _cross_attention_layers(unet: torch.nn.Module) -> list[tuple[str, Attention]]:
    """The ``attn2`` modules of the UNet in the reference's layer order: up blocks, down blocks, then mid."""
    found = [(n, m) for n, m in unet.named_modules() if n.endswith("attn2") and isinstance(m, Attention)]
    order = {"up_blocks": 0, "down_blocks": 1, "mid_block": 2}
    return sorted(found, key=lambda item: order.get(item[0].split(".")[0], 3))


class trace:  # noqa: N801 - the reference API's name
    """Context manager that records cross-attention heat maps of the generations run inside it.

    Args:
        pipeline: a diffusers Stable Diffusion-style pipeline (SD v1.x, SD 2, DeciDiffusion).
        keep_steps: also keep per-step sums (per resolution) for heat maps over step ranges.

    Each pipeline call inside the block starts a fresh recording (like the reference). Batched prompts
    and ``num_images_per_prompt`` work: pick the image with ``batch_idx``.
    """

    def __init__(self, pipeline: Any, keep_steps: bool = True) -> None:
        self.pipe = pipeline
        self.keep_steps = keep_steps
        self.layers = _cross_attention_layers(pipeline.unet)
        if not self.layers:
            raise ValueError(f"{type(pipeline.unet).__name__} has no cross-attention (attn2) modules to trace.")
        self.layer_names = [name for name, _ in self.layers]
        self._originals: list[Any] = []
        self._hooks: list[Any] = []
        self._reset([], (0, 0))

    # -- recording ---------------------------------------------------------------------------------------
    def _reset(self, prompts: list[str], latent_size: tuple[int, int]) -> None:
        self.prompts = prompts
        self.latent_size = latent_size
        self.step = -1
        self.sums: dict[int, torch.Tensor] = {}
        self.layer_factors: dict[int, int] = {}
        self.step_sums: dict[int, dict[int, torch.Tensor]] = defaultdict(dict)

    @property
    def last_prompt(self) -> str:
        """The (first) prompt of the last generation."""
        return self.prompts[0] if self.prompts else ""

    def _factor_and_shape(self, tokens: int) -> tuple[int, int, int]:
        latent_h, latent_w = self.latent_size
        factor = max(1, round(math.sqrt(latent_h * latent_w / tokens)))
        height = -(-latent_h // factor)
        width = tokens // height
        if height * width != tokens:
            height = width = math.isqrt(tokens)
        return factor, height, width

    def _record(
        self, layer_idx: int, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> None:
        if hidden_states.ndim == 4:
            batch, channels, h, w = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, h * w).transpose(1, 2)
        total = hidden_states.shape[0]
        if getattr(self.pipe, "do_classifier_free_guidance", False) and total % 2 == 0:
            hidden_states, encoder_hidden_states = hidden_states[total // 2 :], encoder_hidden_states[total // 2 :]
        if attn.norm_cross is not None:
            encoder_hidden_states = attn.norm_cross(encoder_hidden_states)
        batch, tokens, _ = hidden_states.shape
        query = attn.to_q(hidden_states).view(batch, tokens, attn.heads, -1).transpose(1, 2)
        key = attn.to_k(encoder_hidden_states).view(batch, CONTEXT_SIZE, attn.heads, -1).transpose(1, 2)
        if getattr(attn, "norm_q", None) is not None:
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)
        probs = (torch.matmul(query.float(), key.float().transpose(-1, -2)) * attn.scale).softmax(dim=-1)
        factor, height, width = self._factor_and_shape(tokens)
        maps = probs.transpose(-1, -2).reshape(batch, attn.heads, CONTEXT_SIZE, height, width)
        self.layer_factors[layer_idx] = factor
        if layer_idx in self.sums:
            self.sums[layer_idx] += maps
        else:
            self.sums[layer_idx] = maps.clone()
        if self.keep_steps:
            per_factor = self.step_sums[self.step]
            summed = maps.sum(dim=1)
            per_factor[factor] = per_factor[factor] + summed if factor in per_factor else summed

    def _on_unet_call(self, *_: Any) -> None:
        self.step += 1

    def _on_check_inputs(self, original: Any) -> Any:
        def check_inputs(prompt: Any, height: int, width: int, *args: Any, **kwargs: Any) -> Any:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt) if prompt is not None else [""]
            scale = getattr(self.pipe, "vae_scale_factor", 8)
            self._reset(prompts, (height // scale, width // scale))
            return original(prompt, height, width, *args, **kwargs)

        return check_inputs

    def __enter__(self) -> trace:
        for index, (_, module) in enumerate(self.layers):
            self._originals.append(module.processor)
            module.set_processor(_CrossAttentionCapture(module.processor, self, index))
        self._hooks.append(self.pipe.unet.register_forward_pre_hook(self._on_unet_call))
        self._original_check_inputs = self.pipe.__dict__.get("check_inputs")
        self.pipe.check_inputs = self._on_check_inputs(self.pipe.check_inputs)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.unhook()

    def unhook(self) -> None:
        """Put the original attention processors and pipeline methods back (called on exit)."""
        for (_, module), original in zip(self.layers, self._originals, strict=False):
            module.set_processor(original)
        self._originals.clear()
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if "check_inputs" in self.pipe.__dict__:
            del self.pipe.check_inputs
        if self._original_check_inputs is not None:
            self.pipe.check_inputs = self._original_check_inputs

    # -- results -----------------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        """UNet evaluations recorded in the last generation: one per denoising step (PNDM adds one at the start)."""
        return self.step + 1

    def factors(self) -> set[int]:
        """Map factors recorded (1 = latent resolution, 2 = half, ...)."""
        return set(self.layer_factors.values())

    def _prompt_for(self, batch_idx: int) -> str:
        images = next(iter(self.sums.values())).shape[0]
        if not 0 <= batch_idx < images:
            raise IndexError(f"batch_idx must be in 0..{images - 1}: the last generation made {images} image(s).")
        per_prompt = max(1, images // max(1, len(self.prompts)))
        return self.prompts[min(batch_idx // per_prompt, len(self.prompts) - 1)]

    def compute_global_heat_map(
        self,
        prompt: str | None = None,
        factors: Iterable[int] | None = None,
        head_idx: int | None = None,
        layer_idx: int | None = None,
        normalize: bool = False,
        batch_idx: int = 0,
        steps: Iterable[int] | None = None,
    ) -> GlobalHeatMap:
        """Aggregate the recorded maps into per-token heat maps at latent resolution.

        Args:
            prompt: prompt to label tokens with (default: the generation's prompt for ``batch_idx``).
            factors: map factors to use (default: all recorded except :data:`DEFAULT_SKIPPED_FACTORS`).
            head_idx: use only this attention head.
            layer_idx: use only this cross-attention layer (index into ``layer_names``).
            normalize: divide by the sum over the prompt's tokens (start and end excluded), per pixel.
            batch_idx: which image of a batched generation.
            steps: denoising steps to include (e.g. ``range(0, 10)``; default all). With ``steps`` the maps
                of one resolution are summed over heads and layers before upsampling and clamping, so
                ``head_idx``/``layer_idx`` cannot be combined with it.

        Returns:
            A :class:`GlobalHeatMap` of shape ``(num_prompt_tokens + 2, latent_h, latent_w)``.
        """
        if not self.sums:
            raise RuntimeError("No heat maps recorded. Run the pipeline inside `with trace(pipe) as tc:` first.")
        prompt = self._prompt_for(batch_idx) if prompt is None else prompt
        wanted = set(factors) if factors is not None else self.factors() - DEFAULT_SKIPPED_FACTORS
        size = self.latent_size
        total: torch.Tensor | None = None
        count = 0
        if steps is None:
            for index, maps in self.sums.items():
                if self.layer_factors[index] not in wanted or (layer_idx is not None and index != layer_idx):
                    continue
                heads = maps[batch_idx] if head_idx is None else maps[batch_idx, head_idx : head_idx + 1]
                upsampled = F.interpolate(heads, size=size, mode="bicubic").clamp_(min=0).sum(0)
                total = upsampled if total is None else total + upsampled
                count += heads.shape[0]
        else:
            if head_idx is not None or layer_idx is not None:
                raise ValueError("steps= aggregates over heads and layers; leave head_idx and layer_idx unset.")
            if not self.keep_steps:
                raise ValueError("Per-step maps were not kept: use trace(pipe, keep_steps=True).")
            maps_per_factor = {f: sum(self.layer_factors[i] == f for i in self.sums) for f in wanted}
            heads = next(iter(self.sums.values())).shape[1]
            for step in steps:
                if step not in self.step_sums:
                    raise ValueError(f"Step {step} was not recorded: steps run from 0 to {self.num_steps - 1}.")
                for factor, summed in self.step_sums[step].items():
                    if factor not in wanted:
                        continue
                    upsampled = F.interpolate(summed[batch_idx : batch_idx + 1], size=size, mode="bicubic")[0]
                    total = upsampled if total is None else total + upsampled
            total = total.clamp_(min=0) if total is not None else None
            count = sum(maps_per_factor.values()) * heads
        if total is None or count == 0:
            raise RuntimeError(
                f"No heat maps for factors {sorted(wanted)}, head {head_idx}, layer {layer_idx}; "
                f"recorded factors: {sorted(self.factors())}."
            )
        heat_maps = (total / count)[: len(self.pipe.tokenizer.tokenize(prompt)) + 2]
        if normalize:
            heat_maps = heat_maps / (heat_maps[1:-1].sum(0, keepdim=True) + 1e-6)
        return GlobalHeatMap(self.pipe.tokenizer, prompt, heat_maps.float().cpu())
