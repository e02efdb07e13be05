"""What one cross-attention layer computes, as tensor shapes read from a traced generation (notebook 05).

In a cross-attention layer every latent pixel asks the prompt a question. The image features of the layer's map
(``h x w`` pixels) become the queries; the text encoder's 77 token embeddings become the keys (and the values).
Per head, ``softmax(Q K^T / sqrt(d))`` gives each pixel one probability per token, summing to 1 over the 77
tokens; the column of a token, reshaped to ``h x w``, is that token's map for the layer and step. DAAM sums
these over the denoising steps, upsamples them to the latent and averages them over layers and heads.

:func:`cross_attention_shapes` reports those shapes for every layer a :class:`~nbhelpers.daam.trace` recorded,
from the modules' own weights and the recorded maps, and checks the softmax: the recorded maps, summed over the
tokens, must equal the number of UNet calls at every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CrossAttentionShapes:
    """One cross-attention layer of one traced generation (the conditional half of the batch, one image).

    Attributes:
        layer: the module's name in the UNet.
        map_size: ``(h, w)`` of the layer's feature map: its image tokens are ``h * w`` pixels.
        factor: latent pixels per map cell along a side (1 = latent resolution).
        query_features: channels of the image features the queries are made from (``to_q`` input).
        text_tokens: key/value tokens: the text encoder's context length (77 for CLIP).
        text_features: width of the text embeddings the keys are made from (``to_k`` input: 768 for SD v1.x).
        heads: attention heads.
        head_features: width of one head's queries and keys.
        recorded: shape of the maps the trace summed over steps, ``(batch, heads, tokens, h, w)``.
        softmax_sum: smallest and largest sum over tokens of one pixel's recorded attention, per UNet call (1.0
            when each pixel's probabilities sum to 1 over the tokens).
    """

    layer: str
    map_size: tuple[int, int]
    factor: int
    query_features: int
    text_tokens: int
    text_features: int
    heads: int
    head_features: int
    recorded: tuple[int, ...]
    softmax_sum: tuple[float, float]

    @property
    def queries(self) -> tuple[int, int]:
        """``(h * w, query_features)``: one query per latent pixel of the map."""
        return (self.map_size[0] * self.map_size[1], self.query_features)

    @property
    def keys(self) -> tuple[int, int]:
        """``(text_tokens, text_features)``: one key (and value) per prompt token."""
        return (self.text_tokens, self.text_features)

    @property
    def probabilities(self) -> tuple[int, int, int]:
        """``(heads, h * w, text_tokens)``: per head, one softmax over the tokens for each pixel."""
        return (self.heads, self.map_size[0] * self.map_size[1], self.text_tokens)


def cross_attention_shapes(tracer: Any, batch_idx: int = 0) -> list[CrossAttentionShapes]:
    """The shapes of every layer ``tracer`` (a :class:`~nbhelpers.daam.trace`) recorded, in its layer order.

    Call it after a generation inside the trace. Layers whose maps were left out (unaligned) are not listed.
    """
    shapes = []
    for layer in tracer.layers:
        if layer.index not in tracer.sums:
            continue
        sums = tracer.sums[layer.index]
        per_call = sums[batch_idx].sum(dim=1) / tracer.num_steps  # (heads, h, w): each should be 1
        attention = layer.attention
        shapes.append(
            CrossAttentionShapes(
                layer=layer.name,
                map_size=tracer.layer_sizes[layer.index],
                factor=tracer.layer_factors[layer.index],
                query_features=attention.to_q.in_features,
                text_tokens=sums.shape[2],
                text_features=attention.to_k.in_features,
                heads=attention.heads,
                head_features=attention.to_q.out_features // attention.heads,
                recorded=tuple(sums.shape),
                softmax_sum=(float(per_call.min()), float(per_call.max())),
            )
        )
    return shapes
