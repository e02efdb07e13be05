"""What one cross-attention layer computes (shapes, softmax over tokens), attention shares, masks, overlap and
how a word's map settles over the steps, on the tiny pipelines."""

import math

import pytest
import torch
from PIL import Image

from nbhelpers.daam import GlobalHeatMap, WordHeatMap, set_seed, trace
from nbhelpers.daam.anatomy import cross_attention_shapes
from nbhelpers.daam.measures import (
    REFERENCE_THRESHOLD,
    attention_share,
    map_correlation,
    mask_overlap,
    settling,
    word_mask,
)

PROMPT = "a red fox"


@pytest.fixture(scope="module")
def traced(request):
    pipe = request.getfixturevalue("tiny_sd")
    with torch.no_grad(), trace(pipe) as tc:
        image = pipe(PROMPT, num_inference_steps=3, generator=set_seed(0), height=128, width=128).images[0]
    return pipe, tc, image


def test_shapes_follow_the_layers_and_each_pixels_attention_sums_to_one(traced):
    pipe, tc, _ = traced
    shapes = cross_attention_shapes(tc)
    assert [s.layer for s in shapes] == [tc.layer_names[i] for i in sorted(tc.sums)]
    for s in shapes:
        attention = dict(pipe.unet.named_modules())[s.layer]
        h, w = s.map_size
        assert (h * s.factor, w * s.factor) == (16, 16)  # 128 px image: a 16x16 latent
        assert s.queries == (h * w, attention.to_q.in_features) and s.keys == (77, pipe.text_encoder.config.hidden_size)
        assert s.probabilities == (attention.heads, h * w, 77) and s.recorded == (1, attention.heads, 77, h, w)
        assert s.heads * s.head_features == attention.to_q.out_features
        assert s.softmax_sum == (pytest.approx(1.0, abs=1e-5), pytest.approx(1.0, abs=1e-5))


def test_attention_share_is_the_heat_map_over_the_steps(traced):
    _, tc, _ = traced
    heat = tc.compute_global_heat_map()
    share = attention_share(heat, tc.num_steps)
    torch.testing.assert_close(share.heat_maps * tc.num_steps, heat.heat_maps)
    assert float(share.heat_maps.max()) <= 1.0 + 1e-4  # a share of one pixel's attention
    with pytest.raises(ValueError, match="at least 1"):
        attention_share(heat, 0)


def test_a_mask_is_the_normalised_map_above_the_threshold():
    values = torch.tensor([[0.0, 1.0], [3.0, 4.0]])  # normalised: 0, 0.25, 0.75, 1
    image = Image.new("RGB", (2, 2))
    mask = word_mask(WordHeatMap(values, "fox"), image)
    assert REFERENCE_THRESHOLD == 0.4 and mask.tolist() == [[False, False], [True, True]]
    assert word_mask(WordHeatMap(values), image, threshold=0.2).tolist() == [[False, True], [True, True]]
    with pytest.raises(ValueError, match="min-max normalised"):
        word_mask(WordHeatMap(values), image, threshold=1.0)


def test_overlap_is_intersection_over_union_and_over_each_area():
    a = torch.zeros(4, 4, dtype=torch.bool)
    b = torch.zeros(4, 4, dtype=torch.bool)
    a[:2] = True  # 8 pixels
    b[1:2, :2] = True  # 2 pixels, inside a
    overlap = mask_overlap(a, b)
    assert (overlap.iou, overlap.of_a, overlap.of_b) == (2 / 8, 2 / 8, 1.0)
    assert mask_overlap(a, ~a).iou == 0.0 and mask_overlap(a, torch.zeros_like(a)).of_b == 0.0
    with pytest.raises(ValueError, match="one shape"):
        mask_overlap(a, b[:2])


def test_correlation_of_maps():
    a = torch.arange(16.0).reshape(4, 4)
    assert map_correlation(a, 2 * a + 1) == pytest.approx(1.0)
    assert map_correlation(a, -a) == pytest.approx(-1.0)
    assert math.isnan(map_correlation(a, torch.ones(4, 4)))


def test_settling_compares_each_steps_map_with_the_map_over_all_steps(traced):
    _, tc, _ = traced
    curve = settling(tc, "fox")
    assert len(curve) == tc.num_steps and all(-1.0 <= r <= 1.0 for r in curve)
    # the map over all steps is the sum of the per-step maps: with one step it would correlate perfectly
    per_step = [tc.compute_global_heat_map(steps=[s]).compute_word_heat_map("fox").value for s in range(tc.num_steps)]
    total = tc.compute_global_heat_map(steps=range(tc.num_steps)).compute_word_heat_map("fox").value
    torch.testing.assert_close(sum(per_step), total, rtol=1e-4, atol=1e-6)
    assert curve == [pytest.approx(map_correlation(m, total)) for m in per_step]


def test_attention_share_keeps_the_prompt_for_word_lookups(tiny_sd):
    heat = GlobalHeatMap(tiny_sd.tokenizer, PROMPT, torch.arange(5.0)[:, None, None].expand(5, 2, 2) * 4)
    assert attention_share(heat, 4).compute_word_heat_map("fox").value[0, 0] == pytest.approx(3.0)
