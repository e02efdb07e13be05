"""DAAM word heat maps: which pixels each prompt word attended to (Tang et al., ACL 2023).

The same API as the reference package ``daam`` 0.2.0, working on current diffusers for SD v1.x, SD 2 and
DeciDiffusion's flexible UNet, at every height and width the pipeline accepts::

    from nbhelpers.daam import set_seed, trace

    gen = set_seed(0)
    with torch.no_grad(), trace(pipe) as tc:
        out = pipe("a dog on a bench", num_inference_steps=30, generator=gen)
        heat_map = tc.compute_global_heat_map()
        heat_map.compute_word_heat_map("dog").plot_overlay(out.images[0])

How it works: inside ``trace`` every cross-attention module (``attn2``) gets an attention processor that runs
the original processor and, for the conditional half of the classifier-free-guidance batch only, recomputes
the small ``softmax(QK^T)`` of shape ``(heads, h*w, 77)`` (:mod:`~nbhelpers.daam.hooks`). Each map's height
and width are the spatial shape entering its transformer, recorded by a forward pre-hook, and its factor is
read off exactly from that shape and the latent's (:mod:`~nbhelpers.daam.alignment`); a map that fits no
factor is reported as unaligned (a warning and :attr:`trace.unaligned`) and left out. The maps are summed
over denoising steps on the device, per layer, as they come. On exit the processors and hooks are removed,
also after an exception.

Aggregation (default) equals the reference's: the maps of the down and up blocks, except factor-8 maps (8x8 at
512 px), each upsampled bicubically onto the latent grid, clamped at 0 and averaged over ``(layer, head)``.
For SD v1.x at 512 px this keeps the 64x64, 32x32 and 16x16 maps. DeciDiffusion's flexible UNet has no
cross-attention at 64x64 (its attention sits at 32x32, 16x16 and 8x8), so the same rule keeps its 32x32 and
16x16 maps: the 8x8 maps are too coarse to localise objects, and leaving them out keeps both models on one
rule. Pass ``factors=[2, 4, 8]`` to include them. The mid-block's maps are recorded too but, as in the
reference, used only with ``include_mid_block=True`` (or when ``layer_idx`` names a mid-block layer).
"""

from __future__ import annotations

import random
import warnings
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from diffusers.models.attention_processor import Attention

from nbhelpers.daam.alignment import map_factor
from nbhelpers.daam.heatmap import GlobalHeatMap, aggregate_maps
from nbhelpers.daam.hooks import (
    CrossAttentionCapture,
    CrossAttentionLayer,
    attention_probabilities,
    locate_cross_attention,
)
from nbhelpers.daam.words import kept_token_count

__all__ = ["DEFAULT_SKIPPED_FACTORS", "set_seed", "trace"]

#: Map factors left out of the global heat map unless asked for (the reference skips 8x8 maps at 512 px).
DEFAULT_SKIPPED_FACTORS = frozenset({8})


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return ``torch.Generator().manual_seed(seed)`` (a CPU generator).

    The generator is on the CPU on every machine, as in :func:`nbhelpers.generation.generate` and the other
    notebooks, so a traced image is the image ``generate(pipe, prompt, seed=seed)`` makes, and the same on a
    GPU as on the CPU (diffusers draws the starting noise on the generator's device, then moves it). The
    reference's ``set_seed`` returned a CUDA generator when a GPU was present.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


class trace:  # noqa: N801 - the reference API's name
    """Context manager that records cross-attention heat maps of the generations run inside it.

    Args:
        pipeline: a diffusers Stable Diffusion-style pipeline (SD v1.x, SD 2, DeciDiffusion).
        keep_steps: also keep per-step sums (per factor) for heat maps over step ranges.

    Each pipeline call inside the block starts a fresh recording (like the reference), and so does a UNet
    call with a latent of another size. Batched prompts and ``num_images_per_prompt`` work: pick the image
    with ``batch_idx``. Attention processors set inside the block (``pipe.enable_attention_slicing()``) are
    wrapped again at the next UNet call and kept on exit.
    """

    def __init__(self, pipeline: Any, keep_steps: bool = True) -> None:
        self.pipe = pipeline
        self.keep_steps = keep_steps
        self.layers: list[CrossAttentionLayer] = locate_cross_attention(pipeline.unet)
        if not self.layers:
            raise ValueError(f"{type(pipeline.unet).__name__} has no cross-attention (attn2) modules to trace.")
        self.layer_names = [layer.name for layer in self.layers]
        self.context_size = int(pipeline.tokenizer.model_max_length)
        self._hooks: list[Any] = []
        self._original_check_inputs: Any = None
        self._reset([], (0, 0))

    # -- recording ---------------------------------------------------------------------------------------
    def _reset(self, prompts: list[str], latent_size: tuple[int, int]) -> None:
        self.prompts = prompts
        self.latent_size = latent_size
        self.step = -1
        #: layer index -> maps summed over steps, ``(batch, heads, 77, h, w)``.
        self.sums: dict[int, torch.Tensor] = {}
        #: layer index -> ``(h, w)`` of its maps, from the module.
        self.layer_sizes: dict[int, tuple[int, int]] = {}
        #: layer index -> exact factor of its maps.
        self.layer_factors: dict[int, int] = {}
        #: layer name -> why its maps were left out (no spatial shape, or no factor fits it).
        self.unaligned: dict[str, str] = {}
        #: step -> (factor, in mid-block) -> maps summed over heads and layers, ``(batch, 77, h, w)``.
        self.step_sums: dict[int, dict[tuple[int, bool], torch.Tensor]] = defaultdict(dict)

    @property
    def last_prompt(self) -> str:
        """The (first) prompt of the last generation."""
        return self.prompts[0] if self.prompts else ""

    def _report_unaligned(self, layer: CrossAttentionLayer, reason: str) -> None:
        if layer.name not in self.unaligned:
            self.unaligned[layer.name] = reason
            warnings.warn(f"DAAM: maps of {layer.name} left out: {reason}", stacklevel=2)

    def _record(
        self,
        layer: CrossAttentionLayer,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        map_size: tuple[int, int] | None,
    ) -> None:
        tokens = hidden_states.shape[1]
        if map_size is None or map_size[0] * map_size[1] != tokens:
            self._report_unaligned(layer, f"{tokens} image tokens, but the transformer's input was {map_size}.")
            return
        factor = map_factor(self.latent_size, map_size)
        if factor is None:
            latent_h, latent_w = self.latent_size
            self._report_unaligned(
                layer, f"a {map_size[0]}x{map_size[1]} map fits no factor of the {latent_h}x{latent_w} latent."
            )
            return
        total = hidden_states.shape[0]
        if getattr(self.pipe, "do_classifier_free_guidance", False) and total % 2 == 0:
            hidden_states, encoder_hidden_states = hidden_states[total // 2 :], encoder_hidden_states[total // 2 :]
        probs = attention_probabilities(attn, hidden_states, encoder_hidden_states)
        batch, heads, _, context = probs.shape
        maps = probs.transpose(-1, -2).reshape(batch, heads, context, *map_size)
        index = layer.index
        self.layer_sizes[index] = map_size
        self.layer_factors[index] = factor
        if index in self.sums:
            self.sums[index] += maps
        else:
            self.sums[index] = maps.clone()
        if self.keep_steps:
            per_key = self.step_sums[self.step]
            key = (factor, layer.in_mid_block)
            summed = maps.sum(dim=1)
            per_key[key] = per_key[key] + summed if key in per_key else summed

    def _wrap_processors(self) -> None:
        """Put a capture processor on every layer that has none of ours (new, or replaced by the user)."""
        for layer in self.layers:
            processor = layer.attention.processor
            if not (isinstance(processor, CrossAttentionCapture) and processor.callback == self._record):
                layer.attention.set_processor(CrossAttentionCapture(processor, layer, self._record, self.context_size))

    def _on_unet_call(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs["sample"]
        latent_size = (int(sample.shape[-2]), int(sample.shape[-1]))
        if latent_size != self.latent_size:  # maps of two latent sizes cannot be summed: a new recording
            self._reset(self.prompts, latent_size)
        self.step += 1
        self._wrap_processors()

    def _on_check_inputs(self, original: Any) -> Any:
        def check_inputs(prompt: Any, *args: Any, **kwargs: Any) -> Any:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt) if prompt is not None else [""]
            self._reset(prompts, (0, 0))
            return original(prompt, *args, **kwargs)

        return check_inputs

    def __enter__(self) -> trace:
        self._wrap_processors()
        hooked: set[int] = set()  # layers of one transformer share its pre-hook: register it once
        for layer in self.layers:
            if layer.transformer is None or layer.input_shape is None or id(layer.transformer) in hooked:
                continue
            hooked.add(id(layer.transformer))
            self._hooks.append(layer.transformer.register_forward_pre_hook(layer.input_shape, with_kwargs=True))
        self._hooks.append(self.pipe.unet.register_forward_pre_hook(self._on_unet_call, with_kwargs=True))
        self._original_check_inputs = self.pipe.__dict__.get("check_inputs")
        self.pipe.check_inputs = self._on_check_inputs(self.pipe.check_inputs)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.unhook()

    def unhook(self) -> None:
        """Remove the capture processors (keeping any processor set inside the block) and hooks (on exit)."""
        for layer in self.layers:
            processor = layer.attention.processor
            if isinstance(processor, CrossAttentionCapture) and processor.callback == self._record:
                layer.attention.set_processor(processor.original)
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
        return self.prompts[min(batch_idx // per_prompt, len(self.prompts) - 1)] if self.prompts else ""

    def _uses(self, index: int, wanted: set[int], layer_idx: int | None, include_mid_block: bool) -> bool:
        if self.layer_factors[index] not in wanted:
            return False
        if layer_idx is not None:
            return index == layer_idx
        return include_mid_block or not self.layers[index].in_mid_block

    def compute_global_heat_map(
        self,
        prompt: str | None = None,
        factors: Iterable[int] | None = None,
        head_idx: int | None = None,
        layer_idx: int | None = None,
        normalize: bool = False,
        batch_idx: int = 0,
        steps: Iterable[int] | None = None,
        include_mid_block: bool = False,
    ) -> GlobalHeatMap:
        """Aggregate the recorded maps into per-token heat maps at latent resolution.

        Args:
            prompt: prompt to label tokens with (default: the generation's prompt for ``batch_idx``).
            factors: map factors to use (default: all recorded except :data:`DEFAULT_SKIPPED_FACTORS`).
            head_idx: use only this attention head.
            layer_idx: use only this cross-attention layer (index into ``layer_names``; the reference's
                numbering: up blocks, then down blocks, then the mid-block).
            normalize: divide by the sum over the prompt's tokens (start and end excluded), per pixel.
            batch_idx: which image of a batched generation.
            steps: denoising steps to include (e.g. ``range(0, 10)``; default all). With ``steps`` the maps
                of one factor are summed over heads and layers before upsampling and clamping, so
                ``head_idx``/``layer_idx`` cannot be combined with it.
            include_mid_block: also use the mid-block's maps. The reference never traces the mid-block, so the
                default leaves them out and gives the reference's numbers. At 512 px the SD v1.x mid-block
                is 8x8 (factor 8, skipped anyway); in shallower UNets it is not.

        Returns:
            A :class:`GlobalHeatMap` of shape ``(num_prompt_tokens + 2, latent_h, latent_w)``.
        """
        if not self.sums:
            raise RuntimeError(self._nothing_recorded_message())
        prompt = self._prompt_for(batch_idx) if prompt is None else prompt
        wanted = set(factors) if factors is not None else self.factors() - DEFAULT_SKIPPED_FACTORS
        used = [i for i in self.sums if self._uses(i, wanted, layer_idx, include_mid_block)]
        heads = next(iter(self.sums.values())).shape[1]
        if head_idx is not None and not 0 <= head_idx < heads:
            raise IndexError(f"head_idx must be in 0..{heads - 1}: the layers have {heads} heads.")
        if steps is None:
            chosen = slice(None) if head_idx is None else slice(head_idx, head_idx + 1)
            groups = ((self.sums[i][batch_idx, chosen], self.layer_factors[i]) for i in used)
            count = len(used) * (heads if head_idx is None else 1)
            heat_maps = aggregate_maps(groups, self.latent_size, count) if used else None
        else:
            heat_maps = self._aggregate_steps(steps, wanted, head_idx, layer_idx, include_mid_block, batch_idx, used)
        if heat_maps is None:
            raise RuntimeError(
                f"No heat maps for factors {sorted(wanted)}, head {head_idx}, layer {layer_idx} "
                f"(mid-block {'in' if include_mid_block else 'out'}); recorded factors: {sorted(self.factors())}."
            )
        tokens = min(len(self.pipe.tokenizer.tokenize(prompt)), kept_token_count(self.pipe.tokenizer))
        heat_maps = heat_maps[: tokens + 2]
        if normalize:
            heat_maps = heat_maps / (heat_maps[1:-1].sum(0, keepdim=True) + 1e-6)
        return GlobalHeatMap(self.pipe.tokenizer, prompt, heat_maps.float().cpu())

    def _aggregate_steps(
        self,
        steps: Iterable[int],
        wanted: set[int],
        head_idx: int | None,
        layer_idx: int | None,
        include_mid_block: bool,
        batch_idx: int,
        used: list[int],
    ) -> torch.Tensor | None:
        if head_idx is not None or layer_idx is not None:
            raise ValueError("steps= aggregates over heads and layers; leave head_idx and layer_idx unset.")
        if not self.keep_steps:
            raise ValueError("Per-step maps were not kept: use trace(pipe, keep_steps=True).")
        groups = []
        for step in steps:
            if step not in self.step_sums:
                raise ValueError(f"Step {step} was not recorded: steps run from 0 to {self.num_steps - 1}.")
            for (factor, in_mid_block), summed in self.step_sums[step].items():
                if factor in wanted and (include_mid_block or not in_mid_block):
                    groups.append((summed[batch_idx : batch_idx + 1], factor))
        heads = next(iter(self.sums.values())).shape[1]
        return aggregate_maps(groups, self.latent_size, len(used) * heads, clamp_each=False) if groups else None

    def _nothing_recorded_message(self) -> str:
        replaced = [
            layer.name for layer in self.layers if not isinstance(layer.attention.processor, CrossAttentionCapture)
        ]
        if self.unaligned:
            return f"No heat maps recorded: every layer's maps were unaligned ({self.unaligned})."
        if replaced and self._hooks:
            return (
                "No heat maps recorded: the attention processors were replaced inside the `with trace(pipe)` block "
                "and no UNet call has run since. Run the pipeline after changing processors."
            )
        return "No heat maps recorded. Run the pipeline inside `with trace(pipe) as tc:` first."
