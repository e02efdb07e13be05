"""How much GPU memory a DreamBooth run needs, and which memory savers make it fit.

The estimate of the training peak is a sum of counted terms, not a fitted curve:

- **weights**: every parameter on the device at its dtype (frozen ones in the mixed-precision dtype, trained
  ones in fp32); the text encoder is not on the GPU while training when its embeddings are cached;
- **gradients**: 4 bytes per trained parameter (fp32);
- **optimizer state**: AdamW keeps two fp32 moments, 8 bytes per trained parameter; bitsandbytes' 8-bit AdamW
  two 8-bit moments plus one fp32 scale per 2048-value block (Dettmers et al., "8-bit Optimizers via
  Block-wise Quantization", ICLR 2022, https://arxiv.org/abs/2110.02861), about 2 bytes. The fused AdamW the
  trainer uses on CUDA updates in place, without whole-model temporaries;
- **autocast copies**: under mixed precision, fp32 trained weights are cast to fp16/bf16 for each forward and
  the copies are kept for the backward pass (torch.amp's weight cache), 2 bytes per trained parameter;
- **activations**: the bytes autograd saves for the backward pass, *counted* by running the UNet once on the
  ``meta`` device (shapes only, no memory, no arithmetic) under
  ``torch.autograd.graph.saved_tensors_hooks`` (https://pytorch.org/docs/stable/autograd.html#hooks-for-saved-tensors),
  at the run's resolution and batch, with the run's trainable parameters. Two corrections make the meta run
  behave as the GPU run does: autocast's dtype rules (convolutions and linear layers in fp16/bf16, group and
  layer norm in fp32: https://pytorch.org/docs/stable/amp.html#autocast-op-reference) are applied by a
  ``TorchFunctionMode``; and attention saves what the fused SDPA kernels save, queries, keys, values, output
  and one fp32 log-sum-exp per query row, not the ``tokens x tokens`` score matrix (FlashAttention, Dao et
  al. 2022, https://arxiv.org/abs/2205.14135). With gradient checkpointing (diffusers checkpoints every
  ResNet and transformer block) the kept activations are those saved outside the checkpointed blocks plus
  the largest block, recomputed one at a time during the backward pass.

During the backward pass activations are freed as gradients are made, so the peak is
``weights + optimizer + max(activations + autocast copies, gradients)``.

The GPU benchmark ``benchmarks/dreambooth_step.py --device cuda`` prints this estimate next to the measured
peak (``torch.cuda.max_memory_allocated``); the target is agreement within 15%.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import SlicedAttnProcessor
from diffusers.models.resnet import ResnetBlock2D
from torch.overrides import TorchFunctionMode

from nbhelpers.dreambooth.config import TEXT_ENCODER_LORA_MODULES, DreamBoothConfig, DreamBoothConfigError

logger = logging.getLogger(__name__)

GIB = 2**30
#: share of the free memory a plan may use: the rest absorbs the allocator's fragmentation and cuDNN workspaces
USABLE_SHARE = 0.9
#: the memory of a free Colab T4 that a run can use (Colab reports 15 GiB of the card's 16 GB), for plans made
#: for a T4 on another machine (notebook 03 compares them; benchmarks/gpu_suite.py caps its DreamBooth steps at it)
T4_USABLE_BYTES = 15 * GIB
#: a UNet with fewer parameters than this (the tiny test model) trains on a CPU in seconds
CPU_PRACTICAL_PARAMETERS = 50_000_000
#: what a CPU costs: a measured full-size figure is not available, so say it with the arithmetic
CPU_ADVICE = (
    "Training Stable Diffusion on a CPU is not practical: one training step of the 860M-parameter UNet at "
    "512 px is about 5 TFLOP of work (3x the 1.6 TFLOP forward pass), minutes per step on a laptop CPU, days "
    "for a 400-step run. Use a CUDA GPU (a free Colab T4 trains LoRA at 512 px), or pass --toy / --tiny "
    "(stand_in='toy' / 'tiny') for an offline stand-in, which checks the code path in seconds. memory='off' "
    "(--memory off) trains on the CPU anyway."
)


class MemoryPlanError(DreamBoothConfigError):
    """The run cannot fit (or cannot run usefully) on this device; the message says what would."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each term of the training peak (see the module docstring)."""

    weights: int
    gradients: int
    optimizer: int
    autocast_copies: int
    activations: int

    @property
    def peak(self) -> int:
        """Expected peak of allocated device memory during a training step, in bytes."""
        return self.weights + self.optimizer + max(self.activations + self.autocast_copies, self.gradients)

    def describe(self) -> str:
        parts = ", ".join(
            f"{name.replace('_', ' ')} {value / GIB:.2f}" for name, value in dataclasses.asdict(self).items()
        )
        return f"expected peak {self.peak / GIB:.2f} GiB ({parts} GiB)"


@dataclass
class MemoryPlan:
    """The memory settings a run will use, with the reasons and the expected peak.

    ``budget`` is the device memory the plan may use (``None`` on a CPU: no limit is checked).
    """

    device: str
    budget: int | None
    mixed_precision: str
    gradient_checkpointing: bool
    use_8bit_adam: bool
    cache_text_embeddings: bool
    attention_slicing: bool
    estimate: MemoryEstimate
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Several lines for the log: settings, estimate, budget, reasons."""
        budget = "no GPU limit checked" if self.budget is None else f"{self.budget / GIB:.2f} GiB usable"
        lines = [
            f"Memory plan on {self.device} ({budget}):",
            f"  mixed precision {self.mixed_precision}, gradient checkpointing {_on(self.gradient_checkpointing)}, "
            f"8-bit Adam {_on(self.use_8bit_adam)}, cached text embeddings {_on(self.cache_text_embeddings)}, "
            f"attention slicing {_on(self.attention_slicing)}",
            f"  {self.estimate.describe()}",
        ]
        return "\n".join(lines + [f"  - {note}" for note in self.notes])

    @property
    def optimizer(self) -> str:
        """The optimizer's name (:data:`nbhelpers.training.conventions.OPTIMIZERS`)."""
        return "adamw_8bit" if self.use_8bit_adam else "adamw_torch"

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["expected_peak_bytes"] = self.estimate.peak
        data["optimizer"] = self.optimizer
        return data


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def bitsandbytes_available() -> bool:
    """Whether ``bitsandbytes`` (8-bit Adam) can be imported."""
    return importlib.util.find_spec("bitsandbytes") is not None


# -- counting ------------------------------------------------------------------------------------------------


def lora_targets(module: torch.nn.Module, target_modules: list[str] | tuple[str, ...]) -> list[torch.nn.Linear]:
    """The linear layers peft's LoRA adapts: the module's name equals a target or ends with ``.target`` (after
    an adapter is added, the linear layer is the peft wrapper's ``base_layer``)."""
    found = []
    for name, layer in module.named_modules():
        layer = getattr(layer, "base_layer", layer)
        if isinstance(layer, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in target_modules):
            found.append(layer)
    return found


def count_trained_parameters(
    unet: torch.nn.Module, text_encoder: torch.nn.Module | None, config: DreamBoothConfig
) -> int:
    """Parameters the optimizer will update: LoRA's ``rank x (in + out)`` per adapted layer, or whole modules."""
    modules: list[tuple[torch.nn.Module, list[str] | tuple[str, ...]]] = [(unet, config.lora_target_modules)]
    if config.train_text_encoder and text_encoder is not None:
        modules.append((text_encoder, TEXT_ENCODER_LORA_MODULES))
    if not config.use_lora:
        return sum(p.numel() for module, _ in modules for p in module.parameters())
    return sum(
        config.lora_rank * (layer.in_features + layer.out_features)
        for module, targets in modules
        for layer in lora_targets(module, targets)
    )


class _SdpaSavesLikeFusedKernels(torch.autograd.Function):
    """Shape-only attention whose backward keeps what flash/memory-efficient SDPA keeps: q, k, v, out, lse."""

    @staticmethod
    def forward(ctx, query, key, value):  # noqa: ANN001, ANN205 - autograd.Function signature
        out = torch.zeros_like(query)
        log_sum_exp = query.new_zeros(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, log_sum_exp)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        query, key, value, _, _ = ctx.saved_tensors
        return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


class _GpuLikeMetaRun(TorchFunctionMode):
    """Apply autocast's dtype rules and fused attention to a run on the ``meta`` device."""

    def __init__(self, compute_dtype: torch.dtype) -> None:
        super().__init__()
        self.compute_dtype = compute_dtype

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return _SdpaSavesLikeFusedKernels.apply(*args[:3])
        if func in (F.linear, F.conv2d, torch.matmul, torch.baddbmm, torch.bmm):
            args = tuple(_cast(a, self.compute_dtype) for a in args)
        elif func in (F.group_norm, F.layer_norm):
            args = tuple(_cast(a, torch.float32) for a in args)
            kwargs = {k: _cast(v, torch.float32) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def _cast(value: Any, dtype: torch.dtype) -> Any:
    return value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value


@dataclass(frozen=True)
class ActivationCount:
    """Bytes autograd keeps for the backward pass of one UNet call."""

    saved: int  # without gradient checkpointing
    saved_outside_checkpoints: int  # with it: what stays between the checkpointed blocks
    largest_block: int  # with it: the most one block holds while it is recomputed

    def kept(self, gradient_checkpointing: bool) -> int:
        return self.saved_outside_checkpoints + self.largest_block if gradient_checkpointing else self.saved


def count_activation_bytes(
    unet: torch.nn.Module,
    *,
    batch: int,
    resolution: int,
    compute_dtype: torch.dtype,
    trained: str,
    lora_target_modules: list[str] | tuple[str, ...] = (),
) -> ActivationCount:
    """Count what one training forward pass of ``unet``'s architecture saves for backward, on the meta device.

    Args:
        unet: the UNet (only its class and config are used; nothing is run on its weights).
        batch: images per UNet call (instance + class images).
        resolution: image side in pixels; the latents are ``(batch, in_channels, resolution/8, resolution/8)``.
        compute_dtype: activation dtype (fp16/bf16 under mixed precision, else fp32).
        trained: ``"lora"`` (the target projections' inputs are kept for LoRA's gradient) or ``"full"``.
        lora_target_modules: LoRA's targets (``"lora"`` only).
    """

    # Shapes are all that matter: a full-size UNet is built on the meta device (no memory, no arithmetic); a
    # small one on the CPU, where its real forward pass is faster than the meta device's Python shape rules.
    device = "cpu" if sum(p.numel() for p in unet.parameters()) < CPU_PRACTICAL_PARAMETERS else "meta"
    with torch.random.fork_rng(devices=[]), torch.device(device):  # random init must not move the run's RNG
        meta: Any = type(unet).from_config(unet.config)  # type: ignore[attr-defined]  # a diffusers model
    torch.nn.Module.to(meta, compute_dtype)  # diffusers' own .to() warns about fp32 modules; none matter here
    parameters = {id(p) for p in meta.parameters()}
    if trained == "full":
        meta.requires_grad_(True)
    else:  # LoRA's gradient needs each adapted layer's input: the same tensors a trainable weight keeps
        meta.requires_grad_(False)
        for layer in lora_targets(meta, lora_target_modules):
            layer.weight.requires_grad_(True)
    # one entry per storage (views of one tensor share it); the storage is held so its id stays unique
    storages: dict[int, Any] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in parameters:  # weights are counted once, as weights
            storage = tensor.untyped_storage()
            storages[id(storage)] = storage
        return tensor

    def _saved() -> int:
        return sum(storage.nbytes() for storage in storages.values())

    latent = resolution // 8

    def run(checkpointing: bool, blocks: dict[str, int] | None = None) -> int:
        storages.clear()
        if checkpointing:
            meta.enable_gradient_checkpointing()
        else:
            meta.disable_gradient_checkpointing()
        meta.train()
        handles = []
        if blocks is not None:
            for name, module in meta.named_modules():
                if isinstance(module, (ResnetBlock2D, BasicTransformerBlock)):
                    handles.append(
                        module.register_forward_pre_hook(lambda _m, _a, name=name: blocks.__setitem__(name, -_saved()))
                    )
                    handles.append(
                        module.register_forward_hook(
                            lambda _m, _a, _o, name=name: blocks.__setitem__(name, blocks[name] + _saved())
                        )
                    )
        sample = torch.zeros(batch, meta.config.in_channels, latent, latent, device=device, dtype=compute_dtype)
        context = torch.zeros(batch, 77, meta.config.cross_attention_dim, device=device, dtype=compute_dtype)
        timesteps = torch.zeros(batch, dtype=torch.long, device=device)
        try:
            with _GpuLikeMetaRun(compute_dtype), torch.autograd.graph.saved_tensors_hooks(pack, _identity):
                meta(sample, timesteps, context)
            return _saved()
        finally:
            storages.clear()
            for handle in handles:
                handle.remove()

    blocks: dict[str, int] = {}
    saved = run(False, blocks)
    outside = run(True)
    return ActivationCount(saved, outside, max(blocks.values(), default=0))


def _identity(tensor: Any) -> Any:
    return tensor


# -- estimate and plan ---------------------------------------------------------------------------------------


def module_bytes(module: torch.nn.Module | None, dtype: torch.dtype | None = None) -> int:
    """Bytes of a module's parameters and buffers (at ``dtype`` if given, else as they are)."""
    if module is None:
        return 0
    tensors = list(module.parameters()) + list(module.buffers())
    if dtype is None:
        return sum(t.numel() * t.element_size() for t in tensors)
    size = torch.empty((), dtype=dtype).element_size()
    return sum(t.numel() * (size if t.is_floating_point() else t.element_size()) for t in tensors)


@dataclass(frozen=True)
class PlanInputs:
    """What the estimate needs to know about the models; activation counts are remembered per shape."""

    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    trained_parameters: int

    def activations(
        self,
        *,
        batch: int,
        resolution: int,
        compute_dtype: torch.dtype,
        trained: str,
        lora_target_modules: list[str] | tuple[str, ...],
    ) -> ActivationCount:
        targets = tuple(lora_target_modules) if trained == "lora" else ()
        key = (
            type(self.unet).__qualname__,
            json.dumps(dict(self.unet.config), sort_keys=True, default=str),  # type: ignore[arg-type]
            batch,
            resolution,
            str(compute_dtype),
            trained,
            targets,
        )
        if key not in _ACTIVATION_COUNTS:  # one architecture and shape always saves the same bytes
            _ACTIVATION_COUNTS[key] = count_activation_bytes(
                self.unet,
                batch=batch,
                resolution=resolution,
                compute_dtype=compute_dtype,
                trained=trained,
                lora_target_modules=targets,
            )
        return _ACTIVATION_COUNTS[key]


_ACTIVATION_COUNTS: dict[tuple, ActivationCount] = {}


def estimate_peak(
    inputs: PlanInputs,
    config: DreamBoothConfig,
    *,
    mixed_precision: str,
    gradient_checkpointing: bool,
    use_8bit_adam: bool,
    cache_text_embeddings: bool,
    resolution: int | None = None,
    use_lora: bool | None = None,
) -> MemoryEstimate:
    """The expected training peak of ``config`` with these memory settings (``resolution``/``use_lora`` override
    the config's, to price alternatives)."""
    resolution = resolution or config.resolution
    use_lora = config.use_lora if use_lora is None else use_lora
    trained = inputs.trained_parameters
    if use_lora != config.use_lora:
        trained = count_trained_parameters(
            inputs.unet, inputs.text_encoder, dataclasses.replace(config, use_lora=use_lora)
        )
    half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision)
    frozen_dtype = half or torch.float32
    unet_bytes = module_bytes(inputs.unet, frozen_dtype) if use_lora else module_bytes(inputs.unet, torch.float32)
    text_bytes = (
        0
        if cache_text_embeddings
        else module_bytes(
            inputs.text_encoder, torch.float32 if config.train_text_encoder and not use_lora else frozen_dtype
        )
    )
    weights = unet_bytes + text_bytes + module_bytes(inputs.vae, frozen_dtype) + (4 * trained if use_lora else 0)
    batch = config.train_batch_size * (2 if config.with_prior_preservation else 1)
    counted = inputs.activations(
        batch=batch,
        resolution=config.resolution,
        compute_dtype=frozen_dtype,
        trained="lora" if use_lora else "full",
        lora_target_modules=config.lora_target_modules,
    ).kept(gradient_checkpointing)
    # another resolution (pricing an alternative) scales with the pixel count: every saved tensor has one entry
    # per latent pixel (attention is fused), apart from the small 77-token text side
    activations = round(counted * (resolution / config.resolution) ** 2)
    return MemoryEstimate(
        weights=weights,
        gradients=4 * trained,
        optimizer=(2 if use_8bit_adam else 8) * trained,
        autocast_copies=2 * trained if half is not None else 0,
        activations=activations,
    )


def device_budget(device: torch.device, held_bytes: int) -> int | None:
    """Bytes a plan may use on ``device``: ``USABLE_SHARE`` of (free memory + what this run already holds there);
    ``None`` for a CPU."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(USABLE_SHARE * (free + held_bytes))


def plan_memory(
    config: DreamBoothConfig,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module,
    vae: torch.nn.Module,
    device: torch.device,
    *,
    budget: int | None = None,
    eight_bit_available: bool | None = None,
) -> MemoryPlan:
    """Choose the memory settings of a run and estimate its peak.

    Settings the config fixes are kept; those left automatic (``None``, ``mixed_precision="auto"``) are turned
    on one at a time, cheapest first (cached text embeddings: free; 8-bit Adam: full fine-tuning only, a small
    change to the optimizer; gradient checkpointing: ~30% slower), until the estimate fits ``budget``.

    Args:
        config: the run's settings.
        unet, text_encoder, vae: the models (their sizes and the UNet's architecture are read).
        device: the training device.
        budget: usable bytes (default: read from the device with :func:`device_budget`; a test passes one).
        eight_bit_available: whether bitsandbytes can be used (default: CUDA and importable).

    Raises:
        MemoryPlanError: ``memory="auto"`` and either the device is a CPU and the model is full-size, or no
            combination of the automatic settings fits; the message prices what would fit.
    """
    on_cuda = device.type == "cuda"
    if budget is None:
        budget = device_budget(
            device,
            sum(module_bytes(m) for m in (unet, text_encoder, vae) if next(m.parameters()).device.type == "cuda"),
        )
    if eight_bit_available is None:
        eight_bit_available = on_cuda and bitsandbytes_available()
    notes: list[str] = []
    unet_parameters = sum(p.numel() for p in unet.parameters())
    if not on_cuda and unet_parameters >= CPU_PRACTICAL_PARAMETERS:
        if config.memory == "auto":
            raise MemoryPlanError(CPU_ADVICE)
        notes.append(CPU_ADVICE)
    mixed_precision = config.mixed_precision
    if mixed_precision == "auto":
        mixed_precision = "fp16" if on_cuda else "no"
        notes.append(
            "mixed precision: fp16 on CUDA (frozen weights in fp16, trained ones fp32)"
            if on_cuda
            else "mixed precision: none off CUDA"
        )
    settings = {
        "gradient_checkpointing": config.gradient_checkpointing,
        "use_8bit_adam": config.use_8bit_adam,
        "cache_text_embeddings": config.cache_text_embeddings,
    }
    if config.use_8bit_adam and not eight_bit_available:
        notes.append("8-bit Adam asked for but bitsandbytes/CUDA is missing: AdamW instead (pip install bitsandbytes)")
        settings["use_8bit_adam"] = False
    ladder = [name for name, value in settings.items() if value is None]
    ladder.sort(key=["cache_text_embeddings", "use_8bit_adam", "gradient_checkpointing"].index)
    if config.train_text_encoder and "cache_text_embeddings" in ladder:
        ladder.remove("cache_text_embeddings")
    if (config.use_lora or not eight_bit_available) and "use_8bit_adam" in ladder:
        ladder.remove("use_8bit_adam")  # LoRA's optimizer state is tiny; without bitsandbytes there is none
    chosen = {name: bool(value) for name, value in settings.items()}
    inputs = PlanInputs(unet, text_encoder, vae, count_trained_parameters(unet, text_encoder, config))

    def estimate(**overrides: Any) -> MemoryEstimate:
        return estimate_peak(inputs, config, mixed_precision=mixed_precision, **(chosen | overrides))

    current = estimate()
    for name in ladder:
        if budget is None or current.peak <= budget or config.memory == "off":
            break
        chosen[name] = True
        current = estimate()
        notes.append(f"{name.replace('_', ' ')}: on, needed to fit")
    if budget is not None and current.peak > budget:
        message = _does_not_fit(config, inputs, mixed_precision, chosen, current, budget, eight_bit_available)
        if config.memory == "auto":
            raise MemoryPlanError(message)
        notes.append(message)
    attention_slicing = bool(config.attention_slicing)
    if config.attention_slicing is None:
        notes.append(
            "attention slicing: off; PyTorch 2's scaled_dot_product_attention already avoids the "
            "tokens x tokens matrix (https://huggingface.co/docs/diffusers/optimization/memory)"
        )
    return MemoryPlan(
        str(device),
        budget,
        mixed_precision,
        chosen["gradient_checkpointing"],
        chosen["use_8bit_adam"],
        chosen["cache_text_embeddings"],
        attention_slicing,
        current,
        notes,
    )


def _does_not_fit(
    config: DreamBoothConfig,
    inputs: PlanInputs,
    mixed_precision: str,
    chosen: dict[str, bool],
    current: MemoryEstimate,
    budget: int,
    eight_bit_available: bool,
) -> str:
    """Explain a plan that does not fit and price the alternatives that would."""
    mode = "LoRA" if config.use_lora else "full fine-tuning"
    savers = [name.replace("_", " ") for name, on in chosen.items() if on] or ["no memory savers"]
    lines = [
        f"DreamBooth {mode} at {config.resolution} px needs about {current.peak / GIB:.1f} GiB "
        f"({', '.join(savers)}; mixed precision {mixed_precision}) but about {budget / GIB:.1f} GiB is usable "
        "on this GPU. What would fit:"
    ]
    allowed = {
        "gradient_checkpointing": True,
        "cache_text_embeddings": not config.train_text_encoder,
        "use_8bit_adam": eight_bit_available,
    }
    best = {name: chosen[name] or allowed[name] for name in chosen}
    fixes: list[str] = []

    def price(label: str, **overrides: Any) -> None:
        settings = {"mixed_precision": mixed_precision if mixed_precision != "no" else "fp16"} | best | overrides
        peak = estimate_peak(inputs, config, **settings).peak
        if peak <= budget:
            fixes.append(f"{label} (about {peak / GIB:.1f} GiB)")

    if best != chosen or mixed_precision == "no":
        price(
            "--mixed_precision fp16 --gradient_checkpointing --cache_text_embeddings"
            + (" --use_8bit_adam" if eight_bit_available and not config.use_lora else "")
        )
    if not config.use_lora:
        price("LoRA instead of full fine-tuning (--use_lora)", use_lora=True)
        if not eight_bit_available:
            price("8-bit Adam (pip install bitsandbytes)", use_8bit_adam=True)
    for resolution in range(config.resolution - 64, 255, -64):
        before = len(fixes)
        price(f"--resolution {resolution}", resolution=resolution)
        if len(fixes) > before:
            break
    if not fixes:
        fixes.append("nothing on this GPU: use one with more free memory")
    return "\n".join(lines + [f"  - {fix}" for fix in fixes])


@contextmanager
def sliced_attention(unet: Any, enabled: bool) -> Iterator[None]:
    """Use diffusers' sliced attention inside the block (class/validation images), the previous processors after.

    Training keeps the processors it had: sliced attention would save each slice's score matrix for backward.
    """
    if not enabled:
        yield
        return

    previous = unet.attn_processors
    unet.set_attn_processor(SlicedAttnProcessor(slice_size=1))
    try:
        yield
    finally:
        unet.set_attn_processor(previous)
