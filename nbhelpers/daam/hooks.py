"""Hooks on the UNet for DAAM: find the cross-attention layers, capture their attention probabilities, and
record the spatial shape of the maps they make.

- :func:`locate_cross_attention` lists the ``attn2`` modules in the reference's order (up blocks, down blocks,
  then the mid-block), each with the transformer it sits in.
- :class:`TransformerInputShape` is a forward pre-hook on that transformer (a ``Transformer2DModel``): it
  records the ``(height, width)`` of the feature map entering it, which is the height and width of every
  attention map its layers make. Inside the transformer the map is flattened to ``height * width`` tokens, and
  a token count alone cannot tell 9x10 from 10x9, or 33x41 from any other factorisation.
- :class:`CrossAttentionCapture` is the attention processor put on each ``attn2``: it runs the original
  processor (fused SDPA kernels, attention slicing or whatever the user set still do the real work) and hands
  the layer's inputs to a callback, which recomputes only the small ``softmax(QK^T)`` it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.attention_processor import Attention

#: The blocks of a UNet in the order the reference daam 0.2.0 numbers its layers (``layer_idx``).
BLOCK_ORDER = ("up_blocks", "down_blocks", "mid_block")


class TransformerInputShape:
    """Forward pre-hook that records the ``(height, width)`` of the 4-D feature map entering a transformer."""

    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden_states = args[0] if args else kwargs.get("hidden_states")
        if isinstance(hidden_states, torch.Tensor) and hidden_states.ndim == 4:
            self.size = (int(hidden_states.shape[-2]), int(hidden_states.shape[-1]))
        else:
            self.size = None


@dataclass
class CrossAttentionLayer:
    """One cross-attention module of the UNet.

    Attributes:
        index: position in the reference's order (up, down, mid): the ``layer_idx`` of the heat map API.
        name: the module's name in the UNet (``"up_blocks.1.attentions.0.transformer_blocks.0.attn2"``).
        attention: the ``attn2`` module.
        transformer: the ``Transformer2DModel`` it belongs to, whose input has the maps' spatial shape
            (``None`` if it sits in none; its maps are then only usable when the processor gets 4-D input).
        in_mid_block: whether it is in the UNet's mid-block, which the reference does not trace.
        input_shape: the pre-hook to register on ``transformer`` (shared by the layers of one transformer).
    """

    index: int
    name: str
    attention: Attention
    transformer: torch.nn.Module | None
    in_mid_block: bool
    input_shape: TransformerInputShape | None


def _enclosing_transformer(modules: dict[str, torch.nn.Module], name: str) -> torch.nn.Module | None:
    # Lazy: importing diffusers.models.transformers loads all of diffusers' transformer models and the transformers
    # library (seconds), which tracing attention (toy evaluation, notebook 05) otherwise never needs.
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    parts = name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        module = modules.get(".".join(parts[:end]))
        if isinstance(module, Transformer2DModel):
            return module
    return None


def locate_cross_attention(unet: torch.nn.Module) -> list[CrossAttentionLayer]:
    """The UNet's ``attn2`` modules in the reference's layer order: up blocks, down blocks, then the mid-block.

    Works for any UNet whose cross-attention modules are named ``...attn2`` (diffusers' UNet2DConditionModel
    and DeciDiffusion's flexible UNet); within a block the modules keep their order in the model.
    """
    modules = dict(unet.named_modules())
    found = [(n, m) for n, m in modules.items() if n.endswith("attn2") and isinstance(m, Attention)]
    rank = {block: position for position, block in enumerate(BLOCK_ORDER)}
    found.sort(key=lambda item: rank.get(item[0].split(".")[0], len(BLOCK_ORDER)))  # stable: keeps model order
    shapes: dict[int, TransformerInputShape] = {}
    layers = []
    for index, (name, module) in enumerate(found):
        transformer = _enclosing_transformer(modules, name)
        shape = shapes.setdefault(id(transformer), TransformerInputShape()) if transformer is not None else None
        in_mid_block = name.split(".")[0] == "mid_block"
        layers.append(CrossAttentionLayer(index, name, module, transformer, in_mid_block, shape))
    return layers


#: ``callback(layer, attn, hidden_states, encoder_hidden_states, map_size)`` of :class:`CrossAttentionCapture`.
MapCallback = Callable[[CrossAttentionLayer, Attention, torch.Tensor, torch.Tensor, "tuple[int, int] | None"], None]


class CrossAttentionCapture:
    """Attention processor: runs the original processor, then reports text cross-attention to a callback.

    The callback gets the layer, the module, ``hidden_states`` as ``(batch, height * width, channels)``,
    ``encoder_hidden_states`` ``(batch, context_size, dim)`` and the map's ``(height, width)`` (from 4-D input,
    else from the transformer's recorded input shape; ``None`` if neither is known). Only calls whose key
    length is ``context_size`` (the text encoder's 77 tokens) are reported, as in the reference.
    """

    def __init__(self, original: Any, layer: CrossAttentionLayer, callback: MapCallback, context_size: int) -> None:
        self.original = original
        self.layer = layer
        self.callback = callback
        self.context_size = context_size

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
        if encoder_hidden_states is not None and encoder_hidden_states.shape[1] == self.context_size:
            if hidden_states.ndim == 4:
                batch, channels, height, width = hidden_states.shape
                map_size: tuple[int, int] | None = (height, width)
                hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
            else:
                map_size = self.layer.input_shape.size if self.layer.input_shape is not None else None
            with torch.no_grad():
                self.callback(self.layer, attn, hidden_states, encoder_hidden_states, map_size)
        return output


def attention_probabilities(
    attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor
) -> torch.Tensor:
    """``softmax(Q K^T * scale)`` of a cross-attention module, in float32.

    Args:
        attn: the ``attn2`` module.
        hidden_states: ``(batch, tokens, channels)`` image tokens (queries).
        encoder_hidden_states: ``(batch, context_size, dim)`` text embeddings (keys).

    Returns:
        ``(batch, heads, tokens, context_size)``; each row sums to 1 over the text tokens.
    """
    if attn.norm_cross is not None:
        encoder_hidden_states = attn.norm_cross(encoder_hidden_states)
    batch, tokens, _ = hidden_states.shape
    context = encoder_hidden_states.shape[1]
    query = attn.to_q(hidden_states).view(batch, tokens, attn.heads, -1).transpose(1, 2)
    key = attn.to_k(encoder_hidden_states).view(batch, context, attn.heads, -1).transpose(1, 2)
    if getattr(attn, "norm_q", None) is not None:
        query = attn.norm_q(query)
    if getattr(attn, "norm_k", None) is not None:
        key = attn.norm_k(key)
    return (torch.matmul(query.float(), key.float().transpose(-1, -2)) * attn.scale).softmax(dim=-1)
