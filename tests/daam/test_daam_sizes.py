"""DAAM at every image size: each map's height and width are those of the module that made it.

Traced generation (one denoising step, latents out) over a grid of sizes on the tiny SD and DeciDiffusion
pipelines; every recorded map is compared with the spatial shape that really entered its transformer, seen
by an independent hook on the transformer's input GroupNorm.
"""

import math
import warnings

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from nbhelpers.daam import trace
from nbhelpers.daam.alignment import map_factor, upsample_to_latent

PROMPT = "a red fox"
NAMED_SIZES = [(520, 648), (520, 592), (64, 136), (64, 72)]  # (height, width): the sizes that failed before
SD_SPREAD = [(64, 64), (1024, 64), (200, 328), (256, 264), (96, 1016), (384, 128)]
DECI_SIZES = [(64, 64), (1024, 64), (128, 320), (576, 448), (192, 256)]  # its UNet takes multiples of 64 px


def _both_orientations(sizes):
    return list(dict.fromkeys([*sizes, *[(w, h) for h, w in sizes]]))


SD_GRID = _both_orientations(NAMED_SIZES + SD_SPREAD)
DECI_GRID = _both_orientations(DECI_SIZES)


@pytest.fixture(scope="module")
def one_step_sd(tiny_sd):
    """The tiny SD with DDIM (one UNet call per step; PNDM adds a warm-up call), sharing its modules."""
    pipe = StableDiffusionPipeline(
        **{**tiny_sd.components, "scheduler": DDIMScheduler.from_config(tiny_sd.scheduler.config)}
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _real_input_sizes(unet):
    """Hooks that record the (height, width) entering every transformer, via its own input GroupNorm."""
    sizes, handles = {}, []
    for name, module in unet.named_modules():
        if type(module).__name__ == "Transformer2DModel":
            hook = (lambda key: lambda _, args: sizes.__setitem__(key, tuple(args[0].shape[-2:])))(name)
            handles.append(module.norm.register_forward_pre_hook(hook))
    return sizes, handles


def _check_traced_generation(pipe, height, width):
    real, handles = _real_input_sizes(pipe.unet)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error")  # an unaligned map would warn
            with trace(pipe) as tc:
                pipe(
                    PROMPT,
                    height=height,
                    width=width,
                    num_inference_steps=1,
                    output_type="latent",
                    generator=torch.Generator().manual_seed(0),
                )
    finally:
        for handle in handles:
            handle.remove()
    latent = (height // 8, width // 8)
    assert tc.latent_size == latent
    assert set(tc.sums) == set(range(len(tc.layers)))  # every layer, mid-block included, recorded
    for index, maps in tc.sums.items():
        transformer = tc.layer_names[index].split(".transformer_blocks")[0]
        assert tuple(maps.shape[-2:]) == real[transformer], (tc.layer_names[index], (height, width))
        factor = tc.layer_factors[index]
        assert factor in (1, 2, 4, 8)
        assert real[transformer] == (math.ceil(latent[0] / factor), math.ceil(latent[1] / factor))
    heat_map = tc.compute_global_heat_map(include_mid_block=True)
    assert heat_map.heat_maps.shape == (len(pipe.tokenizer.tokenize(PROMPT)) + 2, *latent)
    assert torch.isfinite(heat_map.heat_maps).all() and heat_map.heat_maps.min() >= 0
    assert heat_map.compute_word_heat_map("fox").value.shape == latent
    return tc


@pytest.mark.parametrize(("height", "width"), SD_GRID, ids=[f"{h}x{w}" for h, w in SD_GRID])
def test_sd_map_shapes_come_from_the_module(height, width, one_step_sd):
    _check_traced_generation(one_step_sd, height, width)


@pytest.mark.parametrize(("height", "width"), DECI_GRID, ids=[f"{h}x{w}" for h, w in DECI_GRID])
def test_deci_map_shapes_come_from_the_module(height, width, tiny_deci):
    tc = _check_traced_generation(tiny_deci, height, width)
    assert tc.factors() == {2, 4, 8}  # no cross-attention at the latent's own resolution


def test_deci_rejects_the_same_sizes_traced_as_untraced(tiny_deci):
    settings = {"height": 520, "width": 648, "num_inference_steps": 1, "output_type": "latent"}
    with pytest.raises(ValueError, match="divisible") as plain:
        tiny_deci(PROMPT, **settings)
    with torch.no_grad(), trace(tiny_deci), pytest.raises(ValueError, match="divisible") as traced:
        tiny_deci(PROMPT, **settings)
    assert str(traced.value) == str(plain.value)


def test_factor_is_exact_over_the_whole_grid():
    """Every multiple of 8 px from 64 to 1024 in both directions (121 x 121 = 14,641 sizes), 4 levels down."""
    sides = range(64, 1025, 8)
    for height in sides:
        for width in sides:
            latent = (height // 8, width // 8)
            for factor in (1, 2, 4, 8):
                size = (math.ceil(latent[0] / factor), math.ceil(latent[1] / factor))
                assert map_factor(latent, size) == factor, (height, width, factor)
    # shapes that sit on no factor: transposed, or not rounded up
    assert map_factor((65, 74), (10, 9)) is None
    assert map_factor((65, 81), (32, 40)) is None
    assert map_factor((8, 17), (2, 4)) is None


def test_upsampling_puts_each_cell_on_its_latent_pixels():
    # divisible: the reference's upsampling to the latent size
    maps = torch.rand(3, 77, 16, 8)
    expected = torch.nn.functional.interpolate(maps, size=(64, 32), mode="bicubic")
    torch.testing.assert_close(upsample_to_latent(maps, 4, (64, 32)), expected)
    # 65x81 latent, factor 2: 33x41 cells of 2x2 latent pixels, the last row and column half outside
    delta = torch.zeros(1, 33, 41)
    delta[0, 32, 10] = 1.0
    upsampled = upsample_to_latent(delta, 2, (65, 81))[0]
    assert upsampled.shape == (65, 81)
    row, col = divmod(int(upsampled.argmax()), 81)
    assert row == 64 and col in (20, 21)
    with pytest.raises(ValueError, match="not at factor 2"):
        upsample_to_latent(torch.zeros(1, 32, 41), 2, (65, 81))


def test_an_unaligned_map_is_reported_and_left_out(one_step_sd):
    """A map whose shape fits no factor (here: the shape seen as transposed, as the old code misread it) is
    reported with a warning, recorded nowhere, and the other maps still give a heat map."""
    name = "down_blocks.2.attentions.0"
    with torch.no_grad(), trace(one_step_sd) as tc:
        layer = next(lay for lay in tc.layers if lay.name.startswith(name))

        def transpose_recorded_size(*_):
            layer.input_shape.size = layer.input_shape.size[::-1]

        handle = layer.transformer.register_forward_pre_hook(transpose_recorded_size)  # runs after trace's hook
        try:
            with pytest.warns(UserWarning, match="fits no factor of the 8x9 latent"):
                one_step_sd(PROMPT, height=64, width=72, num_inference_steps=1, output_type="latent")
        finally:
            handle.remove()
    assert list(tc.unaligned) == [layer.name]
    assert layer.index not in tc.sums and len(tc.sums) == len(tc.layers) - 1
    assert tc.compute_global_heat_map().heat_maps.shape[-2:] == (8, 9)
