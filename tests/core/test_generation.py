import json

import numpy as np
import pytest

from nbhelpers.generation import generate, validate_settings
from nbhelpers.images import read_image_metadata
from nbhelpers.models.schedulers import SCHEDULERS, swap_scheduler


def test_generate_is_reproducible_per_seed(tiny_sd):
    first = generate(tiny_sd, ["an owl", "a horse"], seed=3, num_images=2, num_inference_steps=2)
    assert first.seeds == [3, 4, 3, 4]
    assert first.prompts == ["an owl", "an owl", "a horse", "a horse"]
    assert len(first.images) == 4 and first.images[0].size == (64, 64)
    # Same batch, same seeds: bit-identical.
    again = generate(tiny_sd, ["an owl", "a horse"], seed=3, num_images=2, num_inference_steps=2)
    for a, b in zip(first.images, again.images, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # Alone vs in a batch of four: the same picture, but batched CPU kernels may round differently, so pixels
    # can differ by a level or two (the tolerance notebook 01 states: mean difference below one level).
    alone = generate(tiny_sd, "an owl", seed=4, num_inference_steps=2)
    difference = np.abs(np.asarray(alone.images[0], dtype=int) - np.asarray(first.images[1], dtype=int))
    assert difference.max() <= 3 and difference.mean() < 1.0
    assert not np.array_equal(np.asarray(first.images[0]), np.asarray(first.images[1]))
    assert first.diagnosis() == ["ok"] * 4
    assert first.nsfw == [False] * 4 and first.nan == [False] * 4
    assert "random weights" in first.model


def test_generate_applies_catalog_defaults(tiny_deci):
    result = generate(tiny_deci, "an owl", num_inference_steps=2)
    assert result.settings == {"num_inference_steps": 2, "guidance_scale": 7.5, "guidance_rescale": 0.7}


def test_negative_prompt_changes_the_image(tiny_sd):
    plain = generate(tiny_sd, "an owl", num_inference_steps=2)
    negative = generate(tiny_sd, "an owl", num_inference_steps=2, negative_prompt="blurry")
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(negative.images[0]))


def test_saved_images_carry_their_settings(tiny_sd, tmp_path):
    result = generate(tiny_sd, "an owl", seed=11, num_inference_steps=2)
    [path] = result.save(tmp_path)
    meta = read_image_metadata(path)
    assert (meta["prompt"], meta["seed"], meta["steps"]) == ("an owl", 11, 2)
    assert "sd-v1-5" in meta["model"]


def test_nsfw_flag_is_reported_and_told_apart_from_nan(tiny_sd, monkeypatch):
    checker = tiny_sd.safety_checker
    original = checker.concept_embeds_weights.data.clone()
    try:
        checker.concept_embeds_weights.data.fill_(-10.0)  # every image now counts as flagged
        result = generate(tiny_sd, "an owl", num_inference_steps=1)
    finally:
        checker.concept_embeds_weights.data.copy_(original)
    assert result.nsfw == [True]
    assert np.asarray(result.images[0]).max() == 0
    assert result.diagnosis() == ["blacked out by the safety checker"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"guidance_scale": -1}, "guidance_scale"),
        ({"height": 100}, "height must be a multiple of 8"),
        ({"width": 4096}, "width"),
        ({"num_images": 0}, "num_images"),
        ({"guidance_rescale": 2}, "guidance_rescale"),
    ],
)
def test_out_of_range_settings_are_named(kwargs, match):
    settings = {
        "num_inference_steps": None,
        "guidance_scale": None,
        "height": None,
        "width": None,
        "num_images": 1,
    } | kwargs
    with pytest.raises(ValueError, match=match):
        validate_settings(**settings)


def test_empty_prompt_is_refused(tiny_sd):
    with pytest.raises(ValueError, match="non-empty"):
        generate(tiny_sd, "  ")


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_swap_keeps_training_settings(tiny_deci, name):
    from nbhelpers.loading import load_pipeline

    pipe = load_pipeline("deci-v1", stand_in="tiny", device="cpu", progress=False, scheduler=name)
    assert type(pipe.scheduler) is SCHEDULERS[name]
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    out = generate(pipe, "an owl", num_inference_steps=4)  # PNDM with trailing spacing needs >= 4 steps
    assert out.nan == [False]


def test_unknown_scheduler(tiny_sd):
    with pytest.raises(ValueError, match="choose one of"):
        swap_scheduler(tiny_sd, "magic")


def test_captions_of_stand_in_images_carry_the_mark(tiny_sd):
    from nbhelpers.notebook import with_mark
    from nbhelpers.stand_in import stand_in_mark

    result = generate(tiny_sd, ["an owl", "a horse"], seed=5, num_inference_steps=1)
    assert result.stand_in == "tiny"
    assert result.labels() == ["seed 5: an owl (tiny, random weights)", "seed 5: a horse (tiny, random weights)"]
    result.stand_in = None
    assert result.labels() == ["seed 5: an owl", "seed 5: a horse"]
    assert with_mark("Time per image", stand_in_mark("tiny")) == "Time per image (tiny, random weights)"
    assert with_mark("Time per image", stand_in_mark("toy")) == "Time per image (toy model (shapes))"
    assert with_mark("Time per image", stand_in_mark(None)) == "Time per image"


def test_a_step_callback_runs_but_stays_out_of_the_settings_and_metadata(tiny_sd, tmp_path):
    steps_seen = []

    def on_step(pipe, step, timestep, tensors):
        steps_seen.append(step)
        return tensors

    result = generate(tiny_sd, "an owl", num_inference_steps=3, callback_on_step_end=on_step, eta=0.0)
    assert steps_seen == list(range(len(tiny_sd.scheduler.timesteps)))  # PNDM: 3 steps are 4 timesteps
    assert "callback_on_step_end" not in result.settings and result.settings["eta"] == 0.0
    saved = read_image_metadata(result.save(tmp_path)[0])
    assert "callback" not in json.dumps(saved) and saved["eta"] == 0.0
