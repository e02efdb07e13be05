"""DAAM heat maps on the tiny SD and DeciDiffusion pipelines: API, words, batches, saving, seeds, long prompts.

Sizes: tests/daam/test_daam_sizes.py; agreement with the reference daam 0.2.0: tests/daam/test_daam_reference.py.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from nbhelpers.daam import GlobalHeatMap, WordCutOffError, set_seed, trace
from nbhelpers.daam.heatmap import COLORBAR_LABEL, SHARED_COLORBAR_LABEL
from nbhelpers.daam.words import WordNotInPromptError, prompt_words, word_token_positions

PROMPT = "A big owl with bright shinning eyes"


def _processors(pipe):
    return {name: proc for name, proc in pipe.unet.attn_processors.items()}


@pytest.mark.parametrize("fixture", ["tiny_sd", "tiny_deci"])
def test_shapes_non_negativity_and_restored_processors(fixture, request):
    pipe = request.getfixturevalue(fixture)
    before = _processors(pipe)
    with torch.no_grad(), trace(pipe) as tc:
        out = pipe(PROMPT, num_inference_steps=3, generator=set_seed(0), height=128, width=128)
        heat_map = tc.compute_global_heat_map()
        word = heat_map.compute_word_heat_map("owl")
    tokens = len(pipe.tokenizer.tokenize(PROMPT))
    assert heat_map.heat_maps.shape == (tokens + 2, 16, 16)  # latent resolution of a 128 px image
    assert heat_map.heat_maps.min() >= 0 and heat_map.heat_maps.sum() > 0
    assert word.value.shape == (16, 16) and word.value.min() >= 0
    if fixture == "tiny_deci":
        # the flexible UNet has cross-attention at 1/2, 1/4 and 1/8 of the latent side only
        assert tc.factors() == {2, 4, 8}
    else:
        assert 1 in tc.factors()
    assert tc.num_steps == len(pipe.scheduler.timesteps)  # one per UNet call (PNDM warms up with an extra one)
    after = _processors(pipe)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert "check_inputs" not in pipe.__dict__
    assert np.asarray(out.images[0]).shape == (128, 128, 3)


def test_processors_restored_after_an_exception(tiny_sd):
    before = _processors(tiny_sd)
    with pytest.raises(RuntimeError, match="boom"), trace(tiny_sd):
        raise RuntimeError("boom")
    after = _processors(tiny_sd)
    assert all(after[k] is before[k] for k in before)


def test_tracing_does_not_change_the_image(tiny_deci):
    with torch.no_grad():
        plain = tiny_deci(PROMPT, num_inference_steps=2, generator=set_seed(1), output_type="np").images
        with trace(tiny_deci):
            traced = tiny_deci(PROMPT, num_inference_steps=2, generator=set_seed(1), output_type="np").images
    np.testing.assert_allclose(plain, traced, atol=1e-6)


def test_multi_token_and_repeated_words(tiny_sd):
    tokenizer = tiny_sd.tokenizer
    words = prompt_words(tokenizer, "a dog chasing a shinning dog")
    assert [w.text for w in words] == ["a", "dog", "chasing", "a", "shinning", "dog"]
    assert words[4].token_positions == (5, 6)  # "sh" + "inning</w>", counting the start token as 0
    assert word_token_positions(tokenizer, "a dog chasing a shinning dog", "shinning") == [5, 6]
    assert word_token_positions(tokenizer, "a dog chasing a shinning dog", "dog") == [2, 7]
    assert word_token_positions(tokenizer, "a dog chasing a shinning dog", "dog", occurrence=1) == [7]
    heat = GlobalHeatMap(tokenizer, "a dog chasing a shinning dog", torch.arange(9.0)[:, None, None].expand(9, 2, 2))
    assert heat.compute_word_heat_map("shinning").value[0, 0] == pytest.approx(5.5)
    assert heat.compute_word_heat_map("DOG").value[0, 0] == pytest.approx(4.5)  # both occurrences
    assert heat.compute_word_heat_map("dog", occurrence=0).value[0, 0] == pytest.approx(2.0)


def test_absent_word_lists_the_prompt_words(tiny_sd):
    heat = GlobalHeatMap(tiny_sd.tokenizer, "a red fox", torch.zeros(5, 2, 2))
    expected = "'cat' is not in the prompt 'a red fox'. Its words are: a, red, fox"
    with pytest.raises(WordNotInPromptError, match=expected):
        heat.compute_word_heat_map("cat")
    with pytest.raises(WordNotInPromptError, match="appears 1 time"):
        heat.compute_word_heat_map("fox", occurrence=3)


def test_batched_prompts_and_step_ranges(tiny_sd):
    prompts = ["a red fox", "a blue whale in the sea"]
    with torch.no_grad(), trace(tiny_sd) as tc:
        tiny_sd(prompts, num_inference_steps=4, generator=set_seed(0), num_images_per_prompt=2)
        first = tc.compute_global_heat_map(batch_idx=0)
        last = tc.compute_global_heat_map(batch_idx=3)
        early = tc.compute_global_heat_map(batch_idx=3, steps=range(0, 2))
        late = tc.compute_global_heat_map(batch_idx=3, steps=range(2, tc.num_steps))
    assert first.prompt == "a red fox" and last.prompt == "a blue whale in the sea"
    assert first.heat_maps.shape[0] == 5 and last.heat_maps.shape[0] == 8
    assert not torch.allclose(early.heat_maps, late.heat_maps)
    whole = tc.compute_global_heat_map(batch_idx=3, steps=range(tc.num_steps))
    torch.testing.assert_close(whole.heat_maps, last.heat_maps, atol=0.05 * float(last.heat_maps.max()), rtol=0)
    with pytest.raises(IndexError, match="batch_idx"):
        tc.compute_global_heat_map(batch_idx=4)
    with pytest.raises(ValueError, match="Step 99 was not recorded"):
        tc.compute_global_heat_map(steps=[99])


def test_maps_and_overlays_are_saved(tiny_deci, tmp_path):
    with torch.no_grad(), trace(tiny_deci) as tc:
        out = tiny_deci("a red fox", num_inference_steps=2, generator=set_seed(0))
        heat = tc.compute_global_heat_map()
    paths = heat.save_words(tmp_path / "maps", out.images[0])
    assert sorted(p.name for p in paths) == [
        "00-a.npy",
        "00-a.png",
        "01-red.npy",
        "01-red.png",
        "02-fox.npy",
        "02-fox.png",
    ]
    np.testing.assert_allclose(np.load(tmp_path / "maps" / "02-fox.npy"), heat.compute_word_heat_map("fox").value)
    assert Image.open(tmp_path / "maps" / "02-fox.png").size == out.images[0].size
    figure = heat.plot_word_grid(out.images[0], title="a red fox (tiny, random weights)")
    assert [ax.get_title() for ax in figure.axes if ax.get_title()] == ["a", "red", "fox"]
    assert figure.get_suptitle() == "a red fox (tiny, random weights)"
    assert [ax.get_ylabel() for ax in figure.axes if ax.get_ylabel()] == [SHARED_COLORBAR_LABEL]  # one colour bar
    # ... over panels drawn on one scale (0 to the largest word value), not each min-max normalised on its own
    scales = {ax.images[0].get_clim() for ax in figure.axes if ax.images}
    largest = max(
        float(heat.compute_word_heat_map(w).expand_as(out.images[0], absolute=True).max()) for w in "a red fox".split()
    )
    assert len(scales) == 1 and scales.pop() == (0.0, pytest.approx(largest))
    ax = heat.compute_word_heat_map("fox").plot_overlay(
        out.images[0], out_file=tmp_path / "fox-overlay.png", colorbar=True
    )
    assert [a.get_ylabel() for a in ax.figure.axes] == ["", COLORBAR_LABEL]
    assert Image.open(tmp_path / "fox-overlay.png").size[0] > 0
    assert not list(tmp_path.glob(".*.tmp"))  # written through atomic_open: no temporary file left


def test_no_recording_is_a_clear_error(tiny_sd):
    with trace(tiny_sd) as tc, pytest.raises(RuntimeError, match="No heat maps recorded"):
        tc.compute_global_heat_map()


def test_set_seed_gives_the_cpu_generator_every_notebook_uses(monkeypatch):
    """``set_seed`` returns ``torch.Generator().manual_seed(seed)``, as ``generate()`` uses, even with a GPU
    present (the reference returned a CUDA generator there, so the same seed gave another image)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: None)
    generator = set_seed(7)
    assert generator.device.type == "cpu"
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(7).get_state())
    expected = torch.randn(4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.randn(4, generator=set_seed(7)), expected)


def test_words_past_the_token_limit_are_a_clear_error(tiny_sd):
    """CLIP reads a start token, 75 prompt tokens and an end token; the pipeline cuts the rest."""
    prompt = " ".join(["big"] * 73 + ["owl", "cat", "dog", "shinning", "fox"])  # owl 74, cat 75, dog 76: cut
    with torch.no_grad(), trace(tiny_sd) as tc:
        tiny_sd(prompt, height=64, width=64, num_inference_steps=1, output_type="latent")
        heat = tc.compute_global_heat_map()
    assert heat.heat_maps.shape[0] == 77  # start + the 75 tokens read + end
    assert heat.compute_word_heat_map("cat").value.shape == (8, 8)
    torch.testing.assert_close(heat.compute_word_heat_map("cat").value, heat.heat_maps[75])
    for word in ("dog", "fox", "shinning"):
        with pytest.raises(WordCutOffError, match=f"No heat map for '{word}': it comes after the first 75 tokens"):
            heat.compute_word_heat_map(word)
    with pytest.raises(WordNotInPromptError, match="occurrence"):
        heat.compute_word_heat_map("big", occurrence=80)
    with pytest.raises(WordCutOffError, match="word_idx=76"):
        heat.compute_word_heat_map("dog", word_idx=76)
    assert [w.text for w in heat.words()][-3:] == ["big", "owl", "cat"]  # the words that have maps
    # a word that appears before and after the cut uses the occurrence the model read
    repeated = GlobalHeatMap(tiny_sd.tokenizer, " ".join(["owl"] + ["big"] * 80 + ["owl"]), heat.heat_maps)
    torch.testing.assert_close(repeated.compute_word_heat_map("owl").value, heat.heat_maps[1])
