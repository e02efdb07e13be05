"""Native implementation of DeciDiffusion v1.0's denoiser, ``FlexibleUNet2DConditionModel``.

DeciDiffusion ships its UNet as remote code (``flexible_unet/`` in ``Deci/DeciDiffusion-v1-0``) that
imports modules current diffusers no longer has. This module rebuilds the same network from diffusers'
own layers (``ResnetBlock2D``, ``Transformer2DModel``, ``Downsample2D``, ``Upsample2D``, ``Timesteps``,
``TimestepEmbedding``) with the same module names, so the published ``config.json`` and safetensors load
with the ordinary ``from_pretrained``::

    unet = FlexibleUNet2DConditionModel.from_pretrained(
        "Deci/DeciDiffusion-v1-0", subfolder="flexible_unet", dtype=torch.float16
    )

The layout is set by the ``configurations`` entry of the config (see ``DECI_FLEXIBLE_UNET_CONFIG``):

* Every block keeps its layers in one ``nn.ModuleList`` called ``modules_list``, interleaved in
  zip-longest order (resnet 0, attention 0, resnet 1, ...); the mid block puts a resnet ``R0`` first and
  then interleaves attention i before resnet i.
* Down blocks record a skip tensor after each resnet and after their downsampler (except the last down
  block); ``conv_in``'s output is the first skip. Up-block resnets each concatenate the most recent unused
  skip along channels.
* The mid block applies ``R0`` once and then every module of its list in order, so ``R0`` runs twice —
  exactly as the published forward does.

The published model has 612 parameter tensors and 814,746,884 parameters.
"""

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin, UNet2DConditionLoadersMixin
from diffusers.models.activations import get_activation
from diffusers.models.attention import AttentionMixin
from diffusers.models.attention_processor import (
    CROSS_ATTENTION_PROCESSORS,
    Attention,
    AttnProcessor,
    FusedAttnProcessor2_0,
)
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from diffusers.models.upsampling import Upsample2D
from torch import nn

from nbhelpers.models.configs import DECI_FLEXIBLE_UNET_CONFIG, TINY_FLEXIBLE_UNET_CONFIG

__all__ = [
    "DECI_FLEXIBLE_UNET_CONFIG",
    "TINY_FLEXIBLE_UNET_CONFIG",
    "FlexibleCrossAttnDownBlock2D",
    "FlexibleCrossAttnUpBlock2D",
    "FlexibleUNet2DConditionModel",
    "FlexibleUNetMidBlock2DCrossAttn",
    "build_full_size_on_meta",
]

_REQUIRED_CONFIGURATION_KEYS = (
    "down_blocks_in_channels",
    "down_blocks_out_channels",
    "down_blocks_num_resnets",
    "down_blocks_num_attentions",
    "add_downsample",
    "mid_num_resnets",
    "mid_num_attentions",
    "prev_output_channels",
    "up_blocks_num_resnets",
    "up_blocks_num_attentions",
    "add_upsample",
    "num_attention_heads",
)


def _resnet_first(module: nn.Module) -> int:
    """Sort key used when ``mix_block_in_forward`` is false: all resnets before all attentions."""
    return 0 if isinstance(module, ResnetBlock2D) else 1


def _interleaved(
    num_resnets: int,
    num_attentions: int,
    make_resnet: Callable[[int], nn.Module],
    make_attention: Callable[[], nn.Module],
    attention_first: bool = False,
) -> list[nn.Module]:
    """Resnets and attentions in zip-longest order: pair ``i`` is ``make_resnet(i)`` then ``make_attention()``
    (attention first in the mid block); the longer kind continues alone once the shorter runs out."""
    modules: list[nn.Module] = []
    pairs = itertools.zip_longest([True] * num_resnets, [True] * num_attentions, fillvalue=False)
    for i, (add_resnet, add_attention) in enumerate(pairs):
        if attention_first and add_attention:
            modules.append(make_attention())
        if add_resnet:
            modules.append(make_resnet(i))
        if add_attention and not attention_first:
            modules.append(make_attention())
    return modules


def _module_list(modules: list[nn.Module], mix_block_in_forward: bool) -> nn.ModuleList:
    """``modules`` as stored in ``modules_list``: as built, or resnets first when ``mix_block_in_forward``
    is false (a stable sort, so each kind keeps its order)."""
    return nn.ModuleList(modules if mix_block_in_forward else sorted(modules, key=_resnet_first))


class _FlexibleBlock(nn.Module):
    """Shared helpers of the three block kinds: run a resnet / attention, honouring gradient checkpointing."""

    modules_list: nn.ModuleList  # set by each block kind
    _gradient_checkpointing_func: Callable[..., torch.Tensor]  # set by ModelMixin.enable_gradient_checkpointing

    def __init__(self) -> None:
        super().__init__()
        self.gradient_checkpointing = False
        self.has_cross_attention = True

    def _resnet(self, resnet: nn.Module, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(resnet, hidden_states, temb)
        return resnet(hidden_states, temb)

    @staticmethod
    def _attention(attention: nn.Module, hidden_states: torch.Tensor, context: dict[str, Any]) -> torch.Tensor:
        # Transformer2DModel checkpoints its own transformer blocks when gradient checkpointing is on.
        return attention(hidden_states, **context, return_dict=False)[0]

    def _run_modules(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        context: dict[str, Any],
        before_resnet: Callable[[torch.Tensor], torch.Tensor] | None = None,
        after_resnet: Callable[[torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Run ``modules_list`` in order: resnets with ``temb``, attentions with the text ``context``.

        ``before_resnet`` may change a resnet's input (the up block concatenates a skip) and ``after_resnet``
        sees its output (the down block keeps it as a skip); the loop itself is the same for every block.
        """
        for module in self.modules_list:
            if isinstance(module, ResnetBlock2D):
                if before_resnet is not None:
                    hidden_states = before_resnet(hidden_states)
                hidden_states = self._resnet(module, hidden_states, temb)
                if after_resnet is not None:
                    after_resnet(hidden_states)
            else:
                hidden_states = self._attention(module, hidden_states, context)
        return hidden_states


@dataclass(frozen=True)
class BlockSettings:
    """What every block of one flexible UNet shares, and how it builds its resnets and attentions.

    Attributes:
        temb_channels: width of the time embedding each resnet receives, ``(B, temb_channels)``.
        num_attention_heads: heads of every ``Transformer2DModel`` (head dim = channels // heads).
        cross_attention_dim: width of the text context, ``(B, L, cross_attention_dim)``.
        norm_num_groups: GroupNorm groups of resnets and attentions.
        resnet_eps: GroupNorm epsilon of the resnets.
        resnet_act_fn: resnet non-linearity (``"silu"``).
        mix_block_in_forward: keep resnets and attentions interleaved in ``modules_list`` (the published
            model); ``False`` stores all resnets first.
        resnet_kwargs: further ``ResnetBlock2D`` arguments (dropout, time embedding norm, ...).
        attention_kwargs: further ``Transformer2DModel`` arguments (layers, linear projection, ...).
    """

    temb_channels: int
    num_attention_heads: int
    cross_attention_dim: int
    norm_num_groups: int
    resnet_eps: float = 1e-5
    resnet_act_fn: str = "silu"
    mix_block_in_forward: bool = True
    resnet_kwargs: dict[str, Any] = field(default_factory=dict)
    attention_kwargs: dict[str, Any] = field(default_factory=dict)

    def resnet(self, in_channels: int, out_channels: int) -> ResnetBlock2D:
        """A resnet mapping ``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)``."""
        return ResnetBlock2D(
            in_channels=in_channels,
            out_channels=out_channels,
            temb_channels=self.temb_channels,
            eps=self.resnet_eps,
            groups=self.norm_num_groups,
            non_linearity=self.resnet_act_fn,
            **self.resnet_kwargs,
        )

    def attention(self, channels: int) -> Transformer2DModel:
        """A transformer over ``(B, channels, H, W)`` with cross-attention to the text context."""
        return Transformer2DModel(
            num_attention_heads=self.num_attention_heads,
            attention_head_dim=channels // self.num_attention_heads,
            in_channels=channels,
            cross_attention_dim=self.cross_attention_dim,
            norm_num_groups=self.norm_num_groups,
            **self.attention_kwargs,
        )


class FlexibleCrossAttnDownBlock2D(_FlexibleBlock):
    """Down block: ``modules_list`` of resnets/attentions in zip-longest order, then an optional downsampler.

    Input ``(B, in_channels, H, W)``; output ``(B, out_channels, H/2, W/2)`` with a downsampler, else
    ``(B, out_channels, H, W)``. Skips: the output of every resnet, plus the downsampled output unless the
    block is the last down block.
    """

    def __init__(
        self,
        settings: BlockSettings,
        in_channels: int,
        out_channels: int,
        num_resnets: int,
        num_attentions: int,
        add_downsample: bool,
        last_block: bool,
        downsample_padding: int = 1,
    ) -> None:
        super().__init__()
        self.last_block = last_block
        modules = _interleaved(
            num_resnets,
            num_attentions,
            lambda i: settings.resnet(in_channels if i == 0 else out_channels, out_channels),
            lambda: settings.attention(out_channels),
        )
        self.modules_list = _module_list(modules, settings.mix_block_in_forward)
        self.downsamplers = (
            nn.ModuleList(
                [
                    Downsample2D(
                        out_channels, use_conv=True, out_channels=out_channels, padding=downsample_padding, name="op"
                    )
                ]
            )
            if add_downsample
            else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        context: dict[str, Any],
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Return ``(hidden_states, skips)``; ``temb`` is ``(B, temb_channels)``; ``context`` holds the keyword
        arguments of every attention (``encoder_hidden_states`` ``(B, L, D)``, masks, ``cross_attention_kwargs``)."""
        skips: list[torch.Tensor] = []
        hidden_states = self._run_modules(hidden_states, temb, context, after_resnet=skips.append)
        if self.downsamplers is not None:
            for downsampler in self.downsamplers:
                hidden_states = downsampler(hidden_states)
            if not self.last_block:
                skips.append(hidden_states)
        return hidden_states, tuple(skips)


class FlexibleUNetMidBlock2DCrossAttn(_FlexibleBlock):
    """Mid block: ``modules_list = [R0] + zip_longest(attentions, resnets)``, then an optional upsampler.

    The forward applies ``R0`` once and then every module of the list in order (``R0`` included), as the
    published model does. Input and output ``(B, channels, H, W)``; ``(B, channels, 2H, 2W)`` with the
    upsampler.
    """

    def __init__(
        self,
        settings: BlockSettings,
        channels: int,
        num_resnets: int,
        num_attentions: int,
        add_upsample: bool,
    ) -> None:
        super().__init__()
        modules = [settings.resnet(channels, channels)] + _interleaved(
            num_resnets,
            num_attentions,
            lambda i: settings.resnet(channels, channels),
            lambda: settings.attention(channels),
            attention_first=True,
        )
        self.modules_list = _module_list(modules, settings.mix_block_in_forward)
        self.upsamplers = (
            nn.ModuleList([Upsample2D(channels, use_conv=True, out_channels=channels)]) if add_upsample else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        context: dict[str, Any],
    ) -> torch.Tensor:
        """Run ``R0``, then the whole list (``R0`` again first), then the upsampler."""
        hidden_states = self._resnet(self.modules_list[0], hidden_states, temb)
        hidden_states = self._run_modules(hidden_states, temb, context)
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states)
        return hidden_states


class FlexibleCrossAttnUpBlock2D(_FlexibleBlock):
    """Up block: resnets (each first concatenating the latest unused skip) and attentions, then an upsampler.

    Resnet ``j`` takes ``(prev_output_channel if j == 0 else out_channels) + skip`` channels, where the skip
    has ``in_channels`` for the block's last resnet and ``out_channels`` otherwise. Input
    ``(B, prev_output_channel, H, W)``; output ``(B, out_channels, 2H, 2W)`` with the upsampler.
    """

    def __init__(
        self,
        settings: BlockSettings,
        in_channels: int,
        out_channels: int,
        prev_output_channel: int,
        num_resnets: int,
        num_attentions: int,
        add_upsample: bool,
    ) -> None:
        super().__init__()
        self.num_resnets: int = num_resnets

        def resnet(i: int) -> ResnetBlock2D:
            skip_channels = in_channels if i == num_resnets - 1 else out_channels
            resnet_in_channels = prev_output_channel if i == 0 else out_channels
            return settings.resnet(resnet_in_channels + skip_channels, out_channels)

        modules = _interleaved(num_resnets, num_attentions, resnet, lambda: settings.attention(out_channels))
        self.modules_list = _module_list(modules, settings.mix_block_in_forward)
        self.upsamplers = (
            nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
            if add_upsample
            else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        res_hidden_states_tuple: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        context: dict[str, Any],
        upsample_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """``res_hidden_states_tuple`` holds this block's skips, oldest first (the last one is used first)."""
        skips = list(res_hidden_states_tuple)

        def concatenate_latest_skip(hidden: torch.Tensor) -> torch.Tensor:
            return torch.cat([hidden, skips.pop()], dim=1)

        hidden_states = self._run_modules(hidden_states, temb, context, before_resnet=concatenate_latest_skip)
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states, upsample_size)
        return hidden_states


def _check_layout(cfg: dict[str, Any]) -> int:
    """Simulate channels, resolutions and the skip stack of a ``configurations`` dict.

    Returns the channel count that reaches ``conv_norm_out``. Raises ``ValueError`` naming the first
    inconsistency, so a bad config fails at construction and not deep inside a forward pass.
    """
    n_down = len(cfg["down_blocks_in_channels"])
    n_up = len(cfg["prev_output_channels"])
    for key in (
        "down_blocks_out_channels",
        "down_blocks_num_resnets",
        "down_blocks_num_attentions",
        "add_downsample",
    ):
        if len(cfg[key]) != n_down:
            raise ValueError(f"configurations[{key!r}] has {len(cfg[key])} entries; expected {n_down}.")
    for key in ("up_blocks_num_resnets", "up_blocks_num_attentions", "add_upsample"):
        if len(cfg[key]) != n_up:
            raise ValueError(f"configurations[{key!r}] has {len(cfg[key])} entries; expected {n_up}.")
    if n_up != n_down:
        raise ValueError(f"{n_down} down blocks but {n_up} up blocks; the flexible UNet needs as many of each.")

    channels, level = cfg["down_blocks_in_channels"][0], 0
    skips: list[tuple[int, int]] = [(channels, level)]  # conv_in output
    for i in range(n_down):
        c_in, c_out = cfg["down_blocks_in_channels"][i], cfg["down_blocks_out_channels"][i]
        if c_in != channels:
            raise ValueError(f"down block {i} expects {c_in} input channels but receives {channels}.")
        if cfg["down_blocks_num_resnets"][i] < 1 and c_in != c_out:
            raise ValueError(f"down block {i} changes channels {c_in}->{c_out} but has no resnet.")
        channels = c_out
        skips += [(channels, level)] * cfg["down_blocks_num_resnets"][i]
        if cfg["add_downsample"][i]:
            level += 1
            if i != n_down - 1:
                skips.append((channels, level))
    if cfg["add_upsample_mid_block"]:
        level -= 1
    up_in = list(reversed(cfg["down_blocks_in_channels"]))
    up_out = list(reversed(cfg["down_blocks_out_channels"]))
    for k in range(n_up):
        if cfg["prev_output_channels"][k] != channels:
            raise ValueError(
                f"prev_output_channels[{k}]={cfg['prev_output_channels'][k]} but up block {k} "
                f"receives {channels} channels."
            )
        n_res = cfg["up_blocks_num_resnets"][k]
        if n_res < 1:
            raise ValueError(f"up block {k} has no resnet; every up block needs at least one.")
        for j in range(n_res):
            if not skips:
                raise ValueError(f"up block {k} resnet {j} has no skip left: the up blocks consume too many.")
            skip_channels, skip_level = skips.pop()
            expected = up_in[k] if j == n_res - 1 else up_out[k]
            if skip_channels != expected:
                raise ValueError(
                    f"up block {k} resnet {j} is built for a {expected}-channel skip but gets {skip_channels}."
                )
            if skip_level != level:
                raise ValueError(f"up block {k} resnet {j}: skip and hidden state have different resolutions.")
            channels = up_out[k]
        if cfg["add_upsample"][k]:
            level -= 1
    if skips:
        raise ValueError(f"{len(skips)} skip tensor(s) left unused by the up blocks.")
    if level != 0:
        raise ValueError("the numbers of downsamplers and upsamplers differ.")
    return channels


class FlexibleUNet2DConditionModel(
    ModelMixin, AttentionMixin, ConfigMixin, UNet2DConditionLoadersMixin, PeftAdapterMixin
):
    """DeciDiffusion v1.0's flexible UNet: a drop-in denoiser for ``StableDiffusionPipeline``.

    The block layout comes from ``configurations`` (keys as in ``DECI_FLEXIBLE_UNET_CONFIG``); the other
    arguments are the ``UNet2DConditionModel`` config keys. They are all accepted so the published
    ``config.json`` loads and pipelines can read ``unet.config.in_channels``, ``sample_size``,
    ``time_cond_proj_dim`` ...; the ones used are ``sample_size``, ``in_channels``, ``out_channels``,
    ``center_input_sample``, ``flip_sin_to_cos``, ``freq_shift``, ``downsample_padding``, ``dropout``,
    ``act_fn`` (time embedding and output activation), ``norm_num_groups`` (every GroupNorm),
    ``norm_eps`` (``conv_norm_out``), ``cross_attention_dim`` (when ``configurations`` has none),
    ``use_linear_projection``, ``only_cross_attention``, ``upcast_attention``,
    ``transformer_layers_per_block`` (an int), ``resnet_time_scale_shift``, ``resnet_out_scale_factor``,
    ``time_embedding_act_fn``, ``timestep_post_act``, ``time_cond_proj_dim``, ``conv_in_kernel`` and
    ``conv_out_kernel``. Class/addition embeddings,
    ``encoder_hid_dim_type`` and non-positional time embeddings are not supported (``NotImplementedError``);
    the SD block-type/channel keys are recorded and ignored. The time projection has
    ``down_blocks_in_channels[0]`` features (320) and the time embedding ``temb_dim`` (1280).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["BasicTransformerBlock", "ResnetBlock2D", "FlexibleCrossAttnUpBlock2D"]
    _skip_layerwise_casting_patterns = ["norm"]
    _repeated_blocks = ["BasicTransformerBlock"]

    @register_to_config
    def __init__(
        self,
        configurations: dict[str, Any] | None = None,
        sample_size: int | tuple[int, int] | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        mid_block_type: str | None = "UNetMidBlock2DCrossAttn",
        up_block_types: tuple[str, ...] = (
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
        only_cross_attention: bool | tuple[bool] = False,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int | tuple[int] = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        dropout: float = 0.0,
        act_fn: str = "silu",
        norm_num_groups: int | None = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int | tuple[int] = 1280,
        transformer_layers_per_block: int | tuple[int] | tuple[tuple] = 1,
        reverse_transformer_layers_per_block: tuple[tuple[int]] | None = None,
        encoder_hid_dim: int | None = None,
        encoder_hid_dim_type: str | None = None,
        attention_head_dim: int | tuple[int] = 8,
        num_attention_heads: int | tuple[int] | None = None,
        dual_cross_attention: bool = False,
        use_linear_projection: bool = False,
        class_embed_type: str | None = None,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        num_class_embeds: int | None = None,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        resnet_skip_time_act: bool = False,
        resnet_out_scale_factor: float = 1.0,
        time_embedding_type: str = "positional",
        time_embedding_dim: int | None = None,
        time_embedding_act_fn: str | None = None,
        timestep_post_act: str | None = None,
        time_cond_proj_dim: int | None = None,
        conv_in_kernel: int = 3,
        conv_out_kernel: int = 3,
        projection_class_embeddings_input_dim: int | None = None,
        attention_type: str = "default",
        class_embeddings_concat: bool = False,
        mid_block_only_cross_attention: bool | None = None,
        cross_attention_norm: str | None = None,
        addition_embed_type_num_heads: int = 64,
    ) -> None:
        super().__init__()
        # Named steps, as in diffusers' UNet2DConditionModel.__init__; modules are made in the published model's
        # order (conv_in, time embedding, down, mid, up, output), which fixes their seeded initial weights.
        self._check_config(
            configurations=configurations,
            class_embed_type=class_embed_type,
            addition_embed_type=addition_embed_type,
            encoder_hid_dim_type=encoder_hid_dim_type,
            num_class_embeds=num_class_embeds,
            time_embedding_type=time_embedding_type,
            attention_type=attention_type,
            dual_cross_attention=dual_cross_attention,
            transformer_layers_per_block=transformer_layers_per_block,
            only_cross_attention=only_cross_attention,
            norm_num_groups=norm_num_groups,
        )
        assert configurations is not None and norm_num_groups is not None  # checked above
        # keep a private copy in the config, so editing model.config cannot change a module-level dict
        configurations = copy.deepcopy(dict(configurations))
        self.register_to_config(configurations=configurations)
        cfg = self._layout(configurations, cross_attention_dim)
        settings = BlockSettings(
            temb_channels=cfg["temb_dim"],
            num_attention_heads=cfg["num_attention_heads"],
            cross_attention_dim=self._context_dim,
            norm_num_groups=norm_num_groups,
            resnet_eps=cfg["resnet_eps"],
            resnet_act_fn=cfg["resnet_act_fn"],
            mix_block_in_forward=bool(cfg["mix_block_in_forward"]),
            resnet_kwargs={
                "dropout": dropout,
                "time_embedding_norm": resnet_time_scale_shift,
                "output_scale_factor": resnet_out_scale_factor,
                "skip_time_act": resnet_skip_time_act,
            },
            attention_kwargs={
                "num_layers": transformer_layers_per_block,
                "dropout": dropout,
                "use_linear_projection": use_linear_projection,
                "only_cross_attention": only_cross_attention,
                "upcast_attention": upcast_attention,
            },
        )
        first_channels = cfg["down_blocks_in_channels"][0]
        self.conv_in = nn.Conv2d(
            in_channels, first_channels, kernel_size=conv_in_kernel, padding=(conv_in_kernel - 1) // 2
        )
        self._set_time_proj(
            first_channels,
            cfg["temb_dim"],
            flip_sin_to_cos=flip_sin_to_cos,
            freq_shift=freq_shift,
            act_fn=act_fn,
            timestep_post_act=timestep_post_act,
            time_cond_proj_dim=time_cond_proj_dim,
            time_embedding_act_fn=time_embedding_act_fn,
        )
        self._set_down_blocks(cfg, settings, downsample_padding)
        self._set_mid_block(cfg, settings)
        self._set_up_blocks(cfg, settings)
        self._set_output(cfg["final_channels"], out_channels, norm_num_groups, norm_eps, act_fn, conv_out_kernel)

    # ------------------------------------------------------------------ construction steps

    @staticmethod
    def _check_config(
        *,
        configurations: dict[str, Any] | None,
        class_embed_type: str | None,
        addition_embed_type: str | None,
        encoder_hid_dim_type: str | None,
        num_class_embeds: int | None,
        time_embedding_type: str,
        attention_type: str,
        dual_cross_attention: bool,
        transformer_layers_per_block: Any,
        only_cross_attention: Any,
        norm_num_groups: int | None,
    ) -> None:
        """Refuse what the flexible UNet cannot build: no ``configurations`` or one without a layout key
        (``ValueError``), and the ``UNet2DConditionModel`` options it does not implement (``NotImplementedError``)."""
        if configurations is None:
            raise ValueError("FlexibleUNet2DConditionModel needs `configurations` (see DECI_FLEXIBLE_UNET_CONFIG).")
        missing = [key for key in _REQUIRED_CONFIGURATION_KEYS if key not in configurations]
        if missing:
            raise ValueError(f"configurations lacks required key(s): {', '.join(missing)}.")
        unsupported = {
            "class_embed_type": class_embed_type,
            "addition_embed_type": addition_embed_type,
            "encoder_hid_dim_type": encoder_hid_dim_type,
            "num_class_embeds": num_class_embeds,
        }
        for key, value in unsupported.items():
            if value is not None:
                raise NotImplementedError(f"FlexibleUNet2DConditionModel does not support {key}={value!r}.")
        if time_embedding_type != "positional":
            raise NotImplementedError(f"time_embedding_type={time_embedding_type!r}; only 'positional' is supported.")
        if attention_type != "default" or dual_cross_attention:
            raise NotImplementedError("only attention_type='default' without dual cross-attention is supported.")
        if not isinstance(transformer_layers_per_block, int):
            raise NotImplementedError("transformer_layers_per_block must be a single int for the flexible UNet.")
        if not isinstance(only_cross_attention, bool):
            raise NotImplementedError("only_cross_attention must be a single bool for the flexible UNet.")
        if norm_num_groups is None:
            raise ValueError("norm_num_groups must be an int for the flexible UNet.")

    def _layout(self, configurations: dict[str, Any], cross_attention_dim: Any) -> dict[str, Any]:
        """The block layout: ``configurations`` over the defaults, checked end to end (channels, resolutions,
        skips), with ``final_channels`` (what reaches ``conv_norm_out``); sets the context width and the numbers of
        down- and upsamplers the forward pass checks inputs against."""
        cfg: dict[str, Any] = {
            "add_upsample_mid_block": True,
            "mix_block_in_forward": True,
            "temb_dim": 4 * configurations["down_blocks_in_channels"][0],
            "resnet_eps": 1e-5,
            "resnet_act_fn": "silu",
            "cross_attention_dim": cross_attention_dim,
        }
        cfg.update({key: value for key, value in configurations.items() if value is not None})
        cfg["final_channels"] = _check_layout(cfg)
        context_dim = cfg["cross_attention_dim"]
        if not isinstance(context_dim, int):
            raise NotImplementedError("cross_attention_dim must be a single int for the flexible UNet.")
        self._context_dim: int = context_dim
        self.num_downsamplers = sum(bool(flag) for flag in cfg["add_downsample"])
        self.num_upsamplers = sum(bool(flag) for flag in cfg["add_upsample"]) + int(bool(cfg["add_upsample_mid_block"]))
        return cfg

    def _set_time_proj(
        self,
        channels: int,
        temb_dim: int,
        *,
        flip_sin_to_cos: bool,
        freq_shift: int,
        act_fn: str,
        timestep_post_act: str | None,
        time_cond_proj_dim: int | None,
        time_embedding_act_fn: str | None,
    ) -> None:
        """The sinusoidal timestep features (``channels`` wide) and the MLP that embeds them (``temb_dim``)."""
        self.time_proj = Timesteps(channels, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(
            channels, temb_dim, act_fn=act_fn, post_act_fn=timestep_post_act, cond_proj_dim=time_cond_proj_dim
        )
        self.time_embed_act = get_activation(time_embedding_act_fn) if time_embedding_act_fn is not None else None

    def _set_down_blocks(self, cfg: dict[str, Any], settings: BlockSettings, downsample_padding: int) -> None:
        n_down = len(cfg["down_blocks_in_channels"])
        self.down_blocks = nn.ModuleList(
            FlexibleCrossAttnDownBlock2D(
                settings,
                in_channels=cfg["down_blocks_in_channels"][i],
                out_channels=cfg["down_blocks_out_channels"][i],
                num_resnets=cfg["down_blocks_num_resnets"][i],
                num_attentions=cfg["down_blocks_num_attentions"][i],
                add_downsample=bool(cfg["add_downsample"][i]),
                last_block=i == n_down - 1,
                downsample_padding=downsample_padding,
            )
            for i in range(n_down)
        )

    def _set_mid_block(self, cfg: dict[str, Any], settings: BlockSettings) -> None:
        self.mid_block = FlexibleUNetMidBlock2DCrossAttn(
            settings,
            channels=cfg["down_blocks_out_channels"][-1],
            num_resnets=cfg["mid_num_resnets"],
            num_attentions=cfg["mid_num_attentions"],
            add_upsample=bool(cfg["add_upsample_mid_block"]),
        )

    def _set_up_blocks(self, cfg: dict[str, Any], settings: BlockSettings) -> None:
        """Up blocks mirror the down blocks' channels (reversed); each resnet concatenates one skip."""
        up_in = list(reversed(cfg["down_blocks_in_channels"]))
        up_out = list(reversed(cfg["down_blocks_out_channels"]))
        self.up_blocks = nn.ModuleList(
            FlexibleCrossAttnUpBlock2D(
                settings,
                in_channels=up_in[k],
                out_channels=up_out[k],
                prev_output_channel=cfg["prev_output_channels"][k],
                num_resnets=cfg["up_blocks_num_resnets"][k],
                num_attentions=cfg["up_blocks_num_attentions"][k],
                add_upsample=bool(cfg["add_upsample"][k]),
            )
            for k in range(len(up_out))
        )

    def _set_output(
        self, channels: int, out_channels: int, norm_num_groups: int, norm_eps: float, act_fn: str, kernel: int
    ) -> None:
        """GroupNorm, activation and the convolution back to ``out_channels`` latent channels."""
        self.conv_norm_out = nn.GroupNorm(num_channels=channels, num_groups=norm_num_groups, eps=norm_eps)
        self.conv_act = get_activation(act_fn)
        self.conv_out = nn.Conv2d(channels, out_channels, kernel_size=kernel, padding=(kernel - 1) // 2)

    # ------------------------------------------------------------------ attention helpers

    def fuse_qkv_projections(self) -> None:
        """Fuse each attention's query/key/value projections into one matmul (key/value for cross-attention).

        Same as ``UNet2DConditionModel.fuse_qkv_projections``: the outputs stay the same within float rounding;
        :meth:`unfuse_qkv_projections` restores the previous processors.
        """
        self.original_attn_processors = self.attn_processors
        for module in self.modules():
            if isinstance(module, Attention):
                module.fuse_projections(fuse=True)
        self.set_attn_processor(FusedAttnProcessor2_0())

    def unfuse_qkv_projections(self) -> None:
        """Put back the attention processors that were active before :meth:`fuse_qkv_projections`."""
        if getattr(self, "original_attn_processors", None) is not None:
            self.set_attn_processor(self.original_attn_processors)
            self.original_attn_processors = None

    def set_default_attn_processor(self) -> None:
        """Use the plain ``AttnProcessor`` everywhere, like ``UNet2DConditionModel`` does."""
        if not all(proc.__class__ in CROSS_ATTENTION_PROCESSORS for proc in self.attn_processors.values()):
            raise ValueError(
                "Cannot call `set_default_attn_processor` when attention processors are of type "
                f"{next(iter(self.attn_processors.values()))}"
            )
        self.set_attn_processor(AttnProcessor())

    def set_attention_slice(self, slice_size: str | int | list[int] | None = "auto") -> None:
        """Sliced attention (what ``pipe.enable_attention_slicing`` calls).

        Args:
            slice_size: ``"auto"`` (half the heads per slice), ``"max"`` (one head per slice), an int, a list
                with one int per attention layer (``attn1``/``attn2`` in module order), or ``None`` to turn
                slicing off.
        """
        layers = [m for m in self.modules() if isinstance(m, Attention)]
        if slice_size == "auto":
            sizes: list[int | None] = [m.sliceable_head_dim // 2 or 1 for m in layers]
        elif slice_size == "max":
            sizes = [1] * len(layers)
        elif isinstance(slice_size, list):
            if len(slice_size) != len(layers):
                raise ValueError(f"got {len(slice_size)} slice sizes for {len(layers)} attention layers.")
            sizes = list(slice_size)
        elif isinstance(slice_size, str):
            raise ValueError(f"slice_size must be 'auto', 'max', an int, a list or None; got {slice_size!r}.")
        else:
            sizes = [slice_size] * len(layers)
        for layer, size in zip(layers, sizes, strict=True):
            layer.set_attention_slice(size)

    # ------------------------------------------------------------------ forward

    def _time_embedding(
        self, sample: torch.Tensor, timestep: torch.Tensor | float | int, timestep_cond: torch.Tensor | None
    ) -> torch.Tensor:
        batch = sample.shape[0]
        if timestep_cond is not None and self.time_embedding.cond_proj is None:
            raise ValueError("timestep_cond was given but the model has no time_cond_proj_dim.")
        if not torch.is_tensor(timestep):
            small = sample.device.type in ("mps", "npu")
            if isinstance(timestep, float):
                dtype = torch.float32 if small else torch.float64
            else:
                dtype = torch.int32 if small else torch.int64
            timesteps = torch.tensor([timestep], dtype=dtype, device=sample.device)
        elif timestep.ndim == 0:
            timesteps = timestep[None].to(sample.device)
        elif timestep.ndim == 1 and timestep.shape[0] in (1, batch):
            timesteps = timestep.to(sample.device)
        else:
            raise ValueError(
                f"timestep must be a number, a 0-d tensor or a 1-d tensor of length 1 or {batch} (the batch "
                f"size); got shape {tuple(timestep.shape)}."
            )
        timesteps = timesteps.expand(batch)
        # Timesteps has no weights and returns float32; the embedding MLP may run in fp16.
        t_emb = self.time_proj(timesteps).to(dtype=sample.dtype)
        emb = self.time_embedding(t_emb, timestep_cond)
        if self.time_embed_act is not None:
            emb = self.time_embed_act(emb)
        return emb

    def _check_inputs(self, sample: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        if sample.ndim != 4:
            raise ValueError(f"sample must be (batch, channels, height, width); got shape {tuple(sample.shape)}.")
        if sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"sample has {sample.shape[1]} channels but the model expects in_channels={self.config.in_channels}."
            )
        factor = 2**self.num_downsamplers
        height, width = sample.shape[-2:]
        if height % factor or width % factor:
            raise ValueError(
                f"sample height and width must be divisible by {factor} (the model downsamples "
                f"{self.num_downsamplers} times); got {height}x{width}. For latents that means image sizes "
                f"divisible by {factor * 8}."
            )
        if encoder_hidden_states is None or encoder_hidden_states.ndim != 3:
            shape = None if encoder_hidden_states is None else tuple(encoder_hidden_states.shape)
            raise ValueError(f"encoder_hidden_states must be (batch, tokens, {self._context_dim}); got {shape}.")
        if encoder_hidden_states.shape[-1] != self._context_dim:
            raise ValueError(
                f"encoder_hidden_states has last dimension {encoder_hidden_states.shape[-1]} but the model's "
                f"cross_attention_dim is {self._context_dim} (a text encoder of another width?)."
            )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        down_block_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        down_intrablock_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DConditionOutput | tuple[torch.Tensor]:
        """Predict the model output (noise or v, per the scheduler) for noisy latents.

        Args:
            sample: noisy latents ``(B, in_channels, H, W)``; H and W divisible by 8 (64x64 for 512 px).
            timestep: diffusion step in ``[0, num_train_timesteps)``: a number, a 0-d tensor or a 1-d tensor
                of length 1 or B.
            encoder_hidden_states: text embeddings ``(B, L, cross_attention_dim)`` (L = 77 for CLIP).
            class_labels: ignored (no class embedding), as in ``UNet2DConditionModel`` without one.
            timestep_cond: optional ``(B, time_cond_proj_dim)`` guidance embedding (needs
                ``time_cond_proj_dim`` in the config).
            attention_mask: optional ``(B, H*W)`` keep-mask (1 keep, 0 discard) for self-attention.
            cross_attention_kwargs: passed to every attention processor (e.g. ``{"scale": 0.5}`` for LoRA).
            added_cond_kwargs: ignored (no added embeddings).
            down_block_additional_residuals: ControlNet residuals; not supported (``NotImplementedError``).
            mid_block_additional_residual: ControlNet residual; not supported (``NotImplementedError``).
            down_intrablock_additional_residuals: T2I-Adapter residuals; not supported
                (``NotImplementedError``).
            encoder_attention_mask: optional ``(B, L)`` keep-mask over the text tokens.
            return_dict: return a ``UNet2DConditionOutput`` instead of a 1-tuple.

        Returns:
            ``UNet2DConditionOutput(sample=...)`` or ``(sample,)``, with ``sample`` of shape
            ``(B, out_channels, H, W)`` in the input's dtype.
        """
        if (
            down_block_additional_residuals is not None
            or mid_block_additional_residual is not None
            or down_intrablock_additional_residuals is not None
        ):
            raise NotImplementedError(
                "FlexibleUNet2DConditionModel does not support ControlNet / T2I-Adapter residuals "
                "(down_block_additional_residuals, mid_block_additional_residual, "
                "down_intrablock_additional_residuals): its skips do not line up with an SD UNet's."
            )
        self._check_inputs(sample, encoder_hidden_states)

        # masks -> additive biases, as UNet2DConditionModel does
        if attention_mask is not None:
            attention_mask = ((1 - attention_mask.to(sample.dtype)) * -10000.0).unsqueeze(1)
        if encoder_attention_mask is not None:
            encoder_attention_mask = ((1 - encoder_attention_mask.to(sample.dtype)) * -10000.0).unsqueeze(1)

        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        emb = self._time_embedding(sample, timestep, timestep_cond)
        # What every Transformer2DModel of every block receives (see _FlexibleBlock._run_modules).
        context = {
            "encoder_hidden_states": encoder_hidden_states,
            "attention_mask": attention_mask,
            "cross_attention_kwargs": cross_attention_kwargs,
            "encoder_attention_mask": encoder_attention_mask,
        }

        sample = self.conv_in(sample)
        skips: tuple[torch.Tensor, ...] = (sample,)
        for down_block in self.down_blocks:
            sample, block_skips = down_block(sample, emb, context)
            skips = skips + block_skips

        sample = self.mid_block(sample, emb, context)

        up_blocks: list[FlexibleCrossAttnUpBlock2D] = list(self.up_blocks)  # type: ignore[arg-type]
        for up_block in up_blocks:
            n = up_block.num_resnets
            block_skips, skips = skips[-n:], skips[:-n]
            sample = up_block(sample, block_skips, emb, context)

        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        if not return_dict:
            return (sample,)
        return UNet2DConditionOutput(sample=sample)


def build_full_size_on_meta() -> FlexibleUNet2DConditionModel:
    """Build the full-size DeciDiffusion flexible UNet on the ``meta`` device (no memory for weights).

    Useful to inspect names, shapes and parameter counts (612 tensors, 814,746,884 parameters) without
    allocating ~3.3 GB of float32 weights or downloading anything.
    """
    with torch.device("meta"):
        return FlexibleUNet2DConditionModel.from_config(DECI_FLEXIBLE_UNET_CONFIG)
