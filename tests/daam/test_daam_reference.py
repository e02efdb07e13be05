"""DAAM against the reference daam 0.2.0 on two UNet configurations, the mid-block option, attention slicing."""

from contextlib import contextmanager

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from nbhelpers import daam as ours

PROMPT = "a dog and a cat next to a dog"
# daam 0.2.0 maps only latents of 64x64 (or 96x96) and reads the size from the UNet config: 512 px.
REFERENCE_SETTINGS = {"num_inference_steps": 1, "height": 512, "width": 512, "output_type": "latent"}


def _two_level_unet() -> UNet2DConditionModel:
    """A UNet with one down-sampling step and 2 layers per block: its mid-block maps are 32x32 at 512 px
    (factor 2, which is kept), not 8x8 (factor 8, skipped) as in SD v1.x."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
    ).eval()


@contextmanager
def _pipeline(tiny_sd, unet=None):
    """A pipeline sharing the tiny SD's modules (one DDIM step: one UNet call), its UNet config at 512 px for
    daam; the shared UNet's config and processors are put back afterwards."""
    unet = unet or tiny_sd.unet
    pipe = StableDiffusionPipeline(
        **{**tiny_sd.components, "unet": unet, "scheduler": DDIMScheduler.from_config(tiny_sd.scheduler.config)}
    )
    pipe.set_progress_bar_config(disable=True)
    sample_size, processors = unet.config.sample_size, unet.attn_processors
    unet.register_to_config(sample_size=64)
    try:
        yield pipe
    finally:
        unet.register_to_config(sample_size=sample_size)
        unet.set_attn_processor(processors)


def _maps(module, pipe):
    """Default, normalised and one-head-one-layer global maps and a word map, from one traced generation."""
    with torch.no_grad(), module.trace(pipe) as tc:
        pipe(PROMPT, generator=torch.Generator().manual_seed(0), **REFERENCE_SETTINGS)
        maps = [
            tc.compute_global_heat_map(),
            tc.compute_global_heat_map(normalize=True),
            tc.compute_global_heat_map(head_idx=1, layer_idx=3),
        ]
    return [m.heat_maps for m in maps], maps[0].compute_word_heat_map("dog").heatmap, tc


@pytest.mark.parametrize("config", ["tiny SD (4 levels)", "two-level UNet"])
def test_same_numbers_as_daam_0_2_0_and_mid_block_as_an_option(config, tiny_sd):
    daam = pytest.importorskip("daam", reason="the reference daam 0.2.0 is installed with --no-deps in .ci/run")
    with _pipeline(tiny_sd, _two_level_unet() if config == "two-level UNet" else None) as pipe:
        reference, reference_word, _ = _maps(daam, pipe)
        mine, mine_word, tc = _maps(ours, pipe)
    tokens = len(tiny_sd.tokenizer.tokenize(PROMPT)) + 2
    for ref, got in zip(reference, mine, strict=True):
        assert ref.shape == got.shape == (tokens, 64, 64)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mine_word, reference_word, rtol=1e-5, atol=1e-6)

    # The reference never traces the mid-block; here it is recorded and used only when asked for.
    (mid,) = [layer for layer in tc.layers if layer.in_mid_block]
    with_mid = tc.compute_global_heat_map(include_mid_block=True).heat_maps
    if config == "tiny SD (4 levels)":  # mid-block 8x8 at 512 px: factor 8, skipped by the factor rule anyway
        assert tc.layer_factors[mid.index] == 8
        torch.testing.assert_close(with_mid, mine[0], rtol=0, atol=0)
    else:  # mid-block 32x32: factor 2, kept by the factor rule, so only the mid-block rule leaves it out
        assert tc.layer_factors[mid.index] == 2
        only_mid = tc.compute_global_heat_map(layer_idx=mid.index).heat_maps
        down_and_up = sum(not layer.in_mid_block for layer in tc.layers)
        expected = (mine[0] * down_and_up + only_mid) / (down_and_up + 1)  # mean over layers (same head count)
        torch.testing.assert_close(with_mid, expected, rtol=1e-5, atol=1e-6)
        assert (with_mid - mine[0]).abs().max() > 0.01 * mine[0].abs().max()


@pytest.mark.parametrize("when", ["before the trace", "inside the trace"])
def test_attention_slicing_gives_the_same_maps(when, tiny_sd):
    settings = {"num_inference_steps": 1, "height": 64, "width": 96, "output_type": "latent"}
    with _pipeline(tiny_sd) as pipe, torch.no_grad():
        with ours.trace(pipe) as tc:
            pipe(PROMPT, generator=torch.Generator().manual_seed(0), **settings)
            plain = tc.compute_global_heat_map(include_mid_block=True).heat_maps
        if when == "before the trace":
            pipe.enable_attention_slicing(1)
        with ours.trace(pipe) as tc:
            if when == "inside the trace":
                pipe.enable_attention_slicing(1)
            pipe(PROMPT, generator=torch.Generator().manual_seed(0), **settings)
            sliced = tc.compute_global_heat_map(include_mid_block=True).heat_maps
        processor = tiny_sd.unet.attn_processors["down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor"]
        assert type(processor).__name__ == "SlicedAttnProcessor"  # the user's setting is kept on exit
    torch.testing.assert_close(sliced, plain, rtol=1e-5, atol=1e-6)
