"""Tests of the native DeciDiffusion flexible UNet (CPU, offline, tiny weights; full size only on meta)."""

import copy
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from nbhelpers.models.flexible_unet import (
    DECI_FLEXIBLE_UNET_CONFIG,
    TINY_FLEXIBLE_UNET_CONFIG,
    FlexibleUNet2DConditionModel,
    build_full_size_on_meta,
)

FULL_TENSORS = 612
FULL_PARAMETERS = 814_746_884


def _tiny_unet(seed: int = 0, **overrides: object) -> FlexibleUNet2DConditionModel:
    torch.manual_seed(seed)
    return FlexibleUNet2DConditionModel(**{**TINY_FLEXIBLE_UNET_CONFIG, **overrides}).eval()


def _inputs(batch: int = 2, size: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, size, size, generator=generator)
    context = torch.randn(batch, 7, 32, generator=generator)
    return sample, context


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and a busy machine makes OpenMP threads very slow."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny() -> FlexibleUNet2DConditionModel:
    return _tiny_unet()


@pytest.fixture(scope="module")
def full_meta() -> FlexibleUNet2DConditionModel:
    return build_full_size_on_meta()


# ---------------------------------------------------------------------------------------------- full size


def test_full_size_totals(full_meta: FlexibleUNet2DConditionModel) -> None:
    state = full_meta.state_dict()
    assert len(state) == FULL_TENSORS
    assert sum(p.numel() for p in full_meta.parameters()) == FULL_PARAMETERS
    assert all(p.device.type == "meta" for p in full_meta.parameters())


def test_full_size_names(full_meta: FlexibleUNet2DConditionModel) -> None:
    names = set(full_meta.state_dict())
    allowed = re.compile(
        r"^(conv_in|time_embedding\.linear_[12]|conv_norm_out|conv_out)\.(weight|bias)$"
        r"|^down_blocks\.[0-2]\.(modules_list\.\d+|downsamplers\.0\.conv)\."
        r"|^mid_block\.(modules_list\.\d+|upsamplers\.0\.conv)\."
        r"|^up_blocks\.[0-2]\.(modules_list\.\d+|upsamplers\.0\.conv)\."
    )
    assert not [n for n in names if not allowed.match(n)]
    for i in range(3):  # every down block has a downsampler (the last one's output is not a skip)
        assert f"down_blocks.{i}.downsamplers.0.conv.weight" in names
    assert "mid_block.upsamplers.0.conv.weight" in names
    assert "up_blocks.0.upsamplers.0.conv.weight" in names
    assert "up_blocks.1.upsamplers.0.conv.weight" in names
    assert not any(n.startswith("up_blocks.2.upsamplers") for n in names)
    # transformer-shaped attentions: GroupNorm norm, 1x1 conv proj_in/out, GEGLU feed-forward
    prefix = "down_blocks.1.modules_list.1."
    for suffix in (
        "norm.weight",
        "proj_in.weight",
        "proj_out.weight",
        "transformer_blocks.0.attn1.to_q.weight",
        "transformer_blocks.0.attn2.to_k.weight",
        "transformer_blocks.0.ff.net.0.proj.weight",
        "transformer_blocks.0.norm3.weight",
    ):
        assert prefix + suffix in names


def test_full_size_layout(full_meta: FlexibleUNet2DConditionModel) -> None:
    def kinds(block: torch.nn.Module) -> str:
        return "".join("R" if isinstance(m, ResnetBlock2D) else "A" for m in block.modules_list)

    assert [kinds(b) for b in full_meta.down_blocks] == ["RR", "RAR", "RAAA"]
    assert kinds(full_meta.mid_block) == "RARARRR"
    assert [kinds(b) for b in full_meta.up_blocks] == ["RARAAAAA", "RARARA", "RRR"]


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("conv_in.weight", (320, 4, 3, 3)),
        ("time_embedding.linear_1.weight", (1280, 320)),
        ("time_embedding.linear_2.weight", (1280, 1280)),
        ("conv_norm_out.weight", (320,)),
        ("conv_out.weight", (4, 320, 3, 3)),
        ("down_blocks.0.modules_list.0.conv1.weight", (320, 320, 3, 3)),
        ("down_blocks.1.modules_list.0.conv_shortcut.weight", (640, 320, 1, 1)),
        ("down_blocks.2.modules_list.1.proj_in.weight", (1280, 1280, 1, 1)),
        ("down_blocks.2.modules_list.1.transformer_blocks.0.attn2.to_k.weight", (1280, 768)),
        ("down_blocks.2.downsamplers.0.conv.weight", (1280, 1280, 3, 3)),
        ("mid_block.modules_list.0.conv1.weight", (1280, 1280, 3, 3)),
        ("mid_block.modules_list.6.conv2.weight", (1280, 1280, 3, 3)),
        ("mid_block.modules_list.1.transformer_blocks.0.attn1.to_q.weight", (1280, 1280)),
        ("mid_block.upsamplers.0.conv.weight", (1280, 1280, 3, 3)),
        ("up_blocks.0.modules_list.0.conv1.weight", (1280, 2560, 3, 3)),
        ("up_blocks.0.modules_list.2.conv1.weight", (1280, 1920, 3, 3)),
        ("up_blocks.1.modules_list.0.conv1.weight", (640, 1920, 3, 3)),
        ("up_blocks.1.modules_list.2.conv1.weight", (640, 1280, 3, 3)),
        ("up_blocks.1.modules_list.4.conv1.weight", (640, 960, 3, 3)),
        ("up_blocks.2.modules_list.0.conv1.weight", (320, 960, 3, 3)),
        ("up_blocks.2.modules_list.2.conv1.weight", (320, 640, 3, 3)),
        ("up_blocks.1.upsamplers.0.conv.weight", (640, 640, 3, 3)),
    ],
)
def test_full_size_shapes(full_meta: FlexibleUNet2DConditionModel, name: str, shape: tuple[int, ...]) -> None:
    assert tuple(full_meta.state_dict()[name].shape) == shape


def test_full_size_forward_on_meta(full_meta: FlexibleUNet2DConditionModel) -> None:
    """The full-size forward runs shape-only on meta: 64x64 latents, 77x768 CLIP context."""
    with torch.no_grad():
        out = full_meta(
            torch.empty(2, 4, 64, 64, device="meta"),
            torch.tensor([999, 999], device="meta"),
            torch.empty(2, 77, 768, device="meta"),
        ).sample
    assert out.shape == (2, 4, 64, 64)


def test_full_config_via_kwargs_and_bad_layout() -> None:
    with torch.device("meta"):
        model = FlexibleUNet2DConditionModel(**DECI_FLEXIBLE_UNET_CONFIG)
    assert sum(p.numel() for p in model.parameters()) == FULL_PARAMETERS
    assert model.config.in_channels == 4 and model.config.sample_size == 64
    assert model.config.time_cond_proj_dim is None
    bad = copy.deepcopy(TINY_FLEXIBLE_UNET_CONFIG)
    bad["configurations"]["prev_output_channels"] = [64, 32, 64]
    with pytest.raises(ValueError, match="prev_output_channels"):
        FlexibleUNet2DConditionModel(**bad)
    bad = copy.deepcopy(TINY_FLEXIBLE_UNET_CONFIG)
    bad["configurations"]["up_blocks_num_resnets"] = [2, 3, 2]
    with pytest.raises(ValueError, match="skip"):
        FlexibleUNet2DConditionModel(**bad)
    bad = copy.deepcopy(TINY_FLEXIBLE_UNET_CONFIG)
    del bad["configurations"]["num_attention_heads"]
    with pytest.raises(ValueError, match="num_attention_heads"):
        FlexibleUNet2DConditionModel(**bad)


# ---------------------------------------------------------------------------------------------- tiny forward


def test_tiny_forward_shape_and_determinism(tiny: FlexibleUNet2DConditionModel) -> None:
    sample, context = _inputs()
    with torch.no_grad():
        out = tiny(sample, 500, context)
        again = tiny(sample, torch.tensor(500), context).sample
        as_tuple = tiny(sample, torch.tensor([500, 500]), context, return_dict=False)
        single = tiny(sample, torch.tensor([500]), context).sample
        other_t = tiny(sample, 10, context).sample
    assert out.sample.shape == sample.shape
    assert torch.isfinite(out.sample).all()
    assert torch.equal(out.sample, again)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.sample)
    assert torch.equal(single, out.sample)
    assert not torch.allclose(other_t, out.sample)
    # per-sample timesteps: row i equals a batch-1 call with timestep t_i
    with torch.no_grad():
        mixed = tiny(sample, torch.tensor([10, 500]), context).sample
        first = tiny(sample[:1], 10, context[:1]).sample
    torch.testing.assert_close(mixed[:1], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[1:], out.sample[1:], atol=1e-5, rtol=1e-5)


def test_tiny_other_sizes(tiny: FlexibleUNet2DConditionModel) -> None:
    sample = torch.randn(1, 4, 16, 24)
    with torch.no_grad():
        out = tiny(sample, 3.5, torch.randn(1, 77, 32)).sample
    assert out.shape == sample.shape


def test_time_cond_proj_dim() -> None:
    model = _tiny_unet(time_cond_proj_dim=16)
    assert model.config.time_cond_proj_dim == 16
    assert model.time_embedding.cond_proj.weight.shape == (32, 16)  # added to the 32-dim projection
    sample, context = _inputs()
    with torch.no_grad():
        out = model(sample, 1, context, timestep_cond=torch.randn(2, 16)).sample
    assert out.shape == sample.shape


def test_config_constants_not_shared(tiny: FlexibleUNet2DConditionModel) -> None:
    assert tiny.config.configurations == TINY_FLEXIBLE_UNET_CONFIG["configurations"]
    assert tiny.config.configurations is not TINY_FLEXIBLE_UNET_CONFIG["configurations"]
    tiny_lists = TINY_FLEXIBLE_UNET_CONFIG["configurations"]["add_downsample"]
    assert tiny_lists is not DECI_FLEXIBLE_UNET_CONFIG["configurations"]["add_downsample"]


def test_input_errors(tiny: FlexibleUNet2DConditionModel) -> None:
    sample, context = _inputs()
    with pytest.raises(ValueError, match="divisible by 8"):
        tiny(torch.randn(2, 4, 12, 12), 1, context)
    with pytest.raises(ValueError, match="cross_attention_dim is 32"):
        tiny(sample, 1, torch.randn(2, 7, 768))
    with pytest.raises(ValueError, match="in_channels=4"):
        tiny(torch.randn(2, 3, 8, 8), 1, context)
    with pytest.raises(ValueError, match="timestep"):
        tiny(sample, torch.tensor([1, 2, 3]), context)
    with pytest.raises(ValueError, match="time_cond_proj_dim"):
        tiny(sample, 1, context, timestep_cond=torch.zeros(2, 16))
    with pytest.raises(NotImplementedError, match="ControlNet"):
        tiny(sample, 1, context, mid_block_additional_residual=torch.zeros(2, 64, 1, 1))


def test_forward_order(tiny: FlexibleUNet2DConditionModel) -> None:
    """R0 of the mid block runs twice; 8 skips made and consumed; cross-attention only at 32/16/8."""
    calls: list[str] = []
    cross_attention_sides: list[int] = []
    up_resnet_inputs: list[int] = []
    skips_made = [1]  # conv_in's output
    handles = []
    names = {module: name for name, module in tiny.named_modules()}

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append(names[module])
        if names[module].startswith("up_blocks") and isinstance(module, ResnetBlock2D):
            up_resnet_inputs.append(args[0].shape[1])
        if names[module].endswith("attn2"):
            cross_attention_sides.append(math.isqrt(args[0].shape[1]))

    def record_down(module: torch.nn.Module, args: tuple, output: tuple) -> None:
        skips_made.append(len(output[1]))

    for module in tiny.modules():
        if isinstance(module, (ResnetBlock2D, Transformer2DModel)) or names[module].endswith("attn2"):
            handles.append(module.register_forward_pre_hook(record, with_kwargs=True))
    for block in tiny.down_blocks:
        handles.append(block.register_forward_hook(record_down))
    try:
        sample = torch.randn(1, 4, 64, 64)
        with torch.no_grad():
            out = tiny(sample, 999, torch.randn(1, 77, 32)).sample
    finally:
        for handle in handles:
            handle.remove()
    assert out.shape == sample.shape

    mid_calls = [c for c in calls if c.startswith("mid_block") and "transformer_blocks" not in c]
    assert mid_calls[:3] == [
        "mid_block.modules_list.0",
        "mid_block.modules_list.0",
        "mid_block.modules_list.1",
    ]
    assert mid_calls.count("mid_block.modules_list.0") == 2
    assert len(mid_calls) == 8  # R0 + the 7 modules of the list
    expected_order = [
        f"{prefix}.modules_list.{j}"
        for prefix, block in [(f"down_blocks.{i}", b) for i, b in enumerate(tiny.down_blocks)]
        + [("mid_block", tiny.mid_block)]
        + [(f"up_blocks.{i}", b) for i, b in enumerate(tiny.up_blocks)]
        for j in range(len(block.modules_list))
    ]
    expected_order.insert(expected_order.index("mid_block.modules_list.0"), "mid_block.modules_list.0")
    assert [c for c in calls if ".transformer_blocks" not in c] == expected_order

    assert sum(skips_made) == 8
    assert len(up_resnet_inputs) == 8
    # tiny channels: hidden + skip for every up resnet, per the channel rule
    assert up_resnet_inputs == [64 + 64, 64 + 64, 64 + 64, 64 + 64, 64 + 32, 64 + 32, 32 + 32, 32 + 32]
    assert set(cross_attention_sides) == {32, 16, 8}
    assert 64 not in cross_attention_sides
    assert len(cross_attention_sides) == 15


# ---------------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip(tiny: FlexibleUNet2DConditionModel, tmp_path: Path) -> None:
    tiny.save_pretrained(tmp_path / "flexible_unet", safe_serialization=True)
    assert (tmp_path / "flexible_unet" / "diffusion_pytorch_model.safetensors").is_file()
    saved = json.loads((tmp_path / "flexible_unet" / "config.json").read_text())
    assert saved["_class_name"] == "FlexibleUNet2DConditionModel"
    assert saved["configurations"]["mid_num_resnets"] == 4

    loaded = FlexibleUNet2DConditionModel.from_pretrained(tmp_path, subfolder="flexible_unet").eval()
    for (name, a), (name_b, b) in zip(tiny.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert name == name_b and torch.equal(a, b), name
    sample, context = _inputs()
    with torch.no_grad():
        expected = tiny(sample, 7, context).sample
        # The weights are bit-identical; safetensors buffers may be less aligned than fresh allocations,
        # which can change CPU kernel paths in the last bits, so compare the loaded model closely ...
        torch.testing.assert_close(loaded(sample, 7, context).sample, expected, atol=1e-6, rtol=1e-6)
        # ... and a freshly allocated copy of it exactly.
        assert torch.equal(copy.deepcopy(loaded)(sample, 7, context).sample, expected)

    half = FlexibleUNet2DConditionModel.from_pretrained(tmp_path / "flexible_unet", dtype=torch.float16)
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    for name, value in half.state_dict().items():
        assert torch.equal(value, tiny.state_dict()[name].half()), name


def test_fp16_variant_and_unknown_config_keys(tiny: FlexibleUNet2DConditionModel, tmp_path: Path) -> None:
    folder = tmp_path / "flexible_unet"
    copy.deepcopy(tiny).half().save_pretrained(folder, variant="fp16", safe_serialization=True)
    assert (folder / "diffusion_pytorch_model.fp16.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    config["some_future_key"] = [1, 2]
    config["configurations"]["another_unknown_key"] = "x"
    (folder / "config.json").write_text(json.dumps(config))
    loaded = FlexibleUNet2DConditionModel.from_pretrained(folder, variant="fp16", dtype=torch.float16)
    assert {p.dtype for p in loaded.parameters()} == {torch.float16}
    assert len(loaded.state_dict()) == len(tiny.state_dict())


# ---------------------------------------------------------------------------------------------- attention


def test_attention_processors(tiny: FlexibleUNet2DConditionModel) -> None:
    model = copy.deepcopy(tiny)
    processors = model.attn_processors
    n_transformers = sum(isinstance(m, Transformer2DModel) for m in model.modules())
    assert n_transformers == 15
    assert len(processors) == 2 * n_transformers
    assert all(re.search(r"\.attn[12]\.processor$", key) for key in processors)
    sample, context = _inputs()
    with torch.no_grad():
        model.set_attn_processor(AttnProcessor())
        classic = model(sample, 100, context).sample
        model.set_attn_processor(AttnProcessor2_0())
        sdpa = model(sample, 100, context).sample
        model.set_attention_slice("max")
        sliced = model(sample, 100, context).sample
        model.set_attention_slice(None)
        assert all(type(p) is AttnProcessor2_0 for p in model.attn_processors.values())
        model.set_default_attn_processor()
        assert all(type(p) is AttnProcessor for p in model.attn_processors.values())
        default = model(sample, 100, context).sample
    torch.testing.assert_close(classic, sdpa, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sliced, sdpa, atol=1e-5, rtol=1e-5)
    assert torch.equal(default, classic)


def test_cross_attention_kwargs_reach_processors(tiny: FlexibleUNet2DConditionModel) -> None:
    seen: list[object] = []

    class Recording(AttnProcessor2_0):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, tag=None):
            seen.append(tag)
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

    model = copy.deepcopy(tiny)
    model.set_attn_processor(Recording())
    sample, context = _inputs()
    with torch.no_grad():
        model(sample, 1, context, cross_attention_kwargs={"tag": "hello"})
    assert seen == ["hello"] * 30


# ---------------------------------------------------------------------------------------------- training


def test_gradient_checkpointing_equivalence() -> None:
    sample, context = _inputs(batch=1)
    grads = []
    for checkpointing in (False, True):
        model = _tiny_unet(seed=3).train()
        used = []
        if checkpointing:

            def func(module: torch.nn.Module, *args: object, used: list[str] = used) -> torch.Tensor:
                used.append(type(module).__name__)
                return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

            model.enable_gradient_checkpointing(gradient_checkpointing_func=func)
            assert model.is_gradient_checkpointing
            assert all(
                block.gradient_checkpointing for block in [*model.down_blocks, model.mid_block, *model.up_blocks]
            )
        loss = model(sample, 250, context).sample.square().mean()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        if checkpointing:
            assert "ResnetBlock2D" in used and "BasicTransformerBlock" in used
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4, msg=name)


def test_peft_add_adapter(tiny: FlexibleUNet2DConditionModel) -> None:
    pytest.importorskip("peft")
    from peft import LoraConfig

    model = copy.deepcopy(tiny)
    model.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    trainable = [n for n, p in model.named_parameters() if "lora" in n]
    assert len(trainable) == 30 * 4 * 2
    sample, context = _inputs()
    with torch.no_grad():  # LoRA B starts at zero: output unchanged
        torch.testing.assert_close(model(sample, 5, context).sample, tiny(sample, 5, context).sample)


# ---------------------------------------------------------------------------------------------- pipeline


def _tiny_tokenizer(folder: Path) -> CLIPTokenizer:
    """A byte-level CLIP tokenizer without merges (ids 0..513), written to ``folder``."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = printable + [256 + n for n in range(256 - len(printable))]
    chars = [chr(c) for c in codes]
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _tiny_pipeline(folder: Path, unet: FlexibleUNet2DConditionModel) -> StableDiffusionPipeline:
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=1000,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
        )
    ).eval()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 8, 16, 16],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    ).eval()
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tiny_tokenizer(folder / "tokenizer"),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_drop_in_stable_diffusion_pipeline(tiny: FlexibleUNet2DConditionModel, tmp_path: Path) -> None:
    pipe = _tiny_pipeline(tmp_path, tiny)
    kwargs = {
        "prompt": "a photograph of an astronaut riding a horse",
        "height": 64,
        "width": 64,
        "num_inference_steps": 2,
        "guidance_scale": 7.5,
        "guidance_rescale": 0.7,
        "output_type": "np",
    }
    images = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 64, 64, 3)
    assert np.isfinite(images).all()
    again = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_array_equal(images, again)
    pipe.enable_attention_slicing()
    sliced = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    pipe.disable_attention_slicing()
    np.testing.assert_allclose(sliced, images, atol=1e-4)


def test_pipeline_load_lora_weights(tiny: FlexibleUNet2DConditionModel, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    trained = copy.deepcopy(tiny)
    trained.add_adapter(
        LoraConfig(r=2, lora_alpha=2, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    lora = {f"unet.{k}": v for k, v in get_peft_model_state_dict(trained).items()}
    pipe = _tiny_pipeline(tmp_path, copy.deepcopy(tiny))
    pipe.load_lora_weights(lora, adapter_name="test")
    sample, context = _inputs()
    with torch.no_grad():
        expected = trained(sample, 5, context).sample
        got = pipe.unet(sample, 5, context).sample
        base = tiny(sample, 5, context).sample
    assert not torch.allclose(expected, base)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
