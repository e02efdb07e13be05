import json

import numpy as np
import pytest

from nbhelpers.errors import ConfigurationError
from nbhelpers.generation import (
    MAX_SEED,
    catalog_size_multiple,
    generate,
    pipeline_size_multiple,
    validate_settings,
)
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
        # Hostile values: each one a clear line, none a TypeError or IndexError from inside diffusers.
        ({"seed": -1}, r"seed must be between 0 and 18446744073709551615 \(a whole number\); got -1"),
        ({"seed": 10**23}, "seed must be between 0 and"),
        ({"seed": MAX_SEED, "num_images": 2}, "seed must be between 0 and 18446744073709551614"),
        ({"seed": 1.5}, r"seed must be between .*\(a whole number\); got 1.5"),
        (
            {"num_inference_steps": "30"},
            r"num_inference_steps must be between 1 and 1000 \(a whole number\); got '30' \(str\)",
        ),
        ({"num_inference_steps": True}, r"num_inference_steps .* got True \(bool\)"),
        ({"num_inference_steps": 2.5}, r"num_inference_steps must be between 1 and 1000 \(a whole number\)"),
        ({"num_inference_steps": float("nan")}, r"num_inference_steps must be between 1 and 1000 \(a whole number\)"),
        ({"guidance_scale": "7.5"}, r"guidance_scale must be between 0 and 50 .* \(str\)"),
        ({"guidance_scale": True}, r"guidance_scale .* got True \(bool\)"),
        ({"guidance_scale": float("inf")}, "guidance_scale must be between 0 and 50"),
        ({"guidance_rescale": float("nan")}, "guidance_rescale must be between 0 and 1"),
        ({"height": 0}, "height must be a multiple of 8"),
        ({"height": -64}, "height must be a multiple of 8"),
        ({"width": True}, r"width must be a multiple of 8 .* got True \(bool\)"),
        ({"width": "64"}, "width must be a multiple of 8"),
        ({"num_images": True}, r"num_images must be between 1 and 64 \(a whole number\)"),
        ({"num_images": 8, "num_prompts": 9}, "9 prompts x num_images=8 is 72 images in one call; at most 64"),
        ({"height": 96, "multiple": 64}, r"height must be a multiple of 64 between 64 and 2048 pixels"),
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
    with pytest.raises(ConfigurationError, match=match):
        validate_settings(**settings)


def test_whole_valued_floats_count_as_whole_numbers_and_are_recorded_as_ints(tiny_sd):
    result = generate(tiny_sd, "an owl", seed=3.0, num_inference_steps=2.0, guidance_scale=5)
    assert result.seeds == [3] and type(result.seeds[0]) is int
    assert result.settings["num_inference_steps"] == 2 and type(result.settings["num_inference_steps"]) is int
    assert result.settings["guidance_scale"] == 5.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seed": -1}, "seed must be between 0 and"),
        ({"num_inference_steps": "3"}, r"num_inference_steps must be between 1 and 1000 \(a whole number\)"),
        ({"guidance_scale": True}, "guidance_scale must be between 0 and 50"),
        ({"bogus": 1}, r"unknown keyword\(s\) bogus\. It takes seed, num_images, .* callback_on_step_end, .*eta"),
        ({"generator": None}, "generate.. sets generator itself .*pass seed="),
        ({"num_images_per_prompt": 2}, "pass num_images="),
        ({"eta": float("nan")}, "eta must be a finite number"),
        ({"negative_prompt": 5}, "negative_prompt must be a non-empty string or a list"),
        ({"negative_prompt": ["a", "b"]}, r"one negative prompt per prompt \(1\); got 2"),
    ],
)
def test_generate_refuses_hostile_arguments_before_running_the_pipeline(tiny_sd, kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        generate(tiny_sd, "an owl", **kwargs)


@pytest.mark.parametrize(
    "prompt, match",
    [
        ("  ", "prompt must be a non-empty string"),
        ([], "prompt must be a non-empty string or a list"),
        (["an owl", ""], r"prompt\[1\] must be a non-empty string"),
        (["an owl", 7], r"prompt\[1\] must be a string; got 7 \(int\)"),
        (42, "prompt must be a non-empty string or a list"),
        ("owl " * 25_000, "prompt has 100,000 characters; at most 2,000 are accepted .*77 tokens"),
        (["an owl"] * 65, "65 prompts x num_images=1 is 65 images in one call"),
    ],
)
def test_bad_prompts_are_refused_with_what_to_pass(tiny_sd, prompt, match):
    with pytest.raises(ConfigurationError, match=match):
        generate(tiny_sd, prompt)


def test_unicode_prompts_round_trip_through_the_png_metadata(tiny_sd, tmp_path):
    prompt = "eine Eule 🦉 \u202eRTL ünïcödé"
    result = generate(tiny_sd, prompt, num_inference_steps=1)
    [path] = result.save(tmp_path)
    assert read_image_metadata(path)["prompt"] == prompt


def test_generate_takes_a_pipeline_not_a_name():
    with pytest.raises(ConfigurationError, match="takes a pipeline as its first argument .*got 'sd-v1-5'"):
        generate("sd-v1-5", "an owl")


def test_a_side_given_alone_gets_the_model_default_for_the_other(tiny_sd, tmp_path):
    # diffusers ignores a height without a width (it makes the default size); the recorded size must be made.
    result = generate(tiny_sd, "an owl", num_inference_steps=1, height=128)
    assert result.images[0].size == (64, 128)  # PIL: (width, height); 64 is the tiny model's default side
    assert (result.settings["height"], result.settings["width"]) == (128, 64)
    saved = read_image_metadata(result.save(tmp_path)[0])
    assert (saved["height"], saved["width"]) == (128, 64)
    wide = generate(tiny_sd, "an owl", num_inference_steps=1, width=72)
    assert wide.images[0].size == (72, 64) and (wide.settings["height"], wide.settings["width"]) == (64, 72)


def test_each_model_says_its_size_multiple(tiny_sd, tiny_deci):
    from nbhelpers.models.flexible_unet import build_full_size_on_meta

    # Full size: the flexible UNet downsamples 3 times and does not pad, so latents need multiples of 8 and
    # images of 8 x 8 = 64 px; diffusers' UNet pads any latent size, so SD v1.x takes diffusers' own 8 px.
    assert build_full_size_on_meta().num_downsamplers == 3
    assert catalog_size_multiple("deci-v1") == 64
    assert catalog_size_multiple("sd-v1-5") == catalog_size_multiple("small-sd-v0") == 8
    # The tiny stand-ins have the same layouts, and take exactly what the multiple says.
    assert pipeline_size_multiple(tiny_deci) == 64 and pipeline_size_multiple(tiny_sd) == 8
    assert generate(tiny_sd, "an owl", num_inference_steps=1, height=72, width=64).images[0].size == (64, 72)
    assert generate(tiny_deci, "an owl", num_inference_steps=1, height=128, width=64).images[0].size == (64, 128)
    with pytest.raises(ConfigurationError, match="height must be a multiple of 64 between 64 and 2048"):
        generate(tiny_deci, "an owl", num_inference_steps=1, height=96, width=64)
    with pytest.raises(ValueError, match="divisible by 64"):  # what the model itself says to a 96 px latent
        tiny_deci("an owl", num_inference_steps=1, height=96, width=64, output_type="np")


def test_save_refuses_a_stem_that_names_another_folder(tiny_sd, tmp_path):
    result = generate(tiny_sd, "an owl", num_inference_steps=1)
    with pytest.raises(ConfigurationError, match="stem must be a plain file-name start"):
        result.save(tmp_path / "out", stem="../escape")
    assert not (tmp_path / "escape-000-seed0.png").exists()


@pytest.mark.parametrize("name", ["ddim", "euler", "euler-a", "dpm++", "unipc"])
def test_scheduler_swap_keeps_training_settings(tiny_deci, name):
    from nbhelpers.loading import load_pipeline

    pipe = load_pipeline("deci-v1", stand_in="tiny", device="cpu", progress=False, scheduler=name)
    assert type(pipe.scheduler) is SCHEDULERS[name]
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.rescale_betas_zero_snr is True
    out = generate(pipe, "an owl", num_inference_steps=4)
    assert out.nan == [False]


def test_a_scheduler_without_zero_snr_is_refused_for_decidiffusion():
    from nbhelpers.loading import load_pipeline
    from nbhelpers.models.schedulers import SchedulerMismatchError

    with pytest.raises(SchedulerMismatchError, match="rescale_betas_zero_snr"):
        load_pipeline("deci-v1", stand_in="tiny", device="cpu", progress=False, scheduler="pndm")


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


def test_save_one_refuses_an_index_it_does_not_have(tiny_sd, tmp_path):
    result = generate(tiny_sd, "an owl", num_inference_steps=1)
    with pytest.raises(ConfigurationError, match=r"index must be between 0 and 0 \(a whole number\); got 5"):
        result.save_one(5, tmp_path / "a.png")


def test_the_full_size_unets_take_the_latent_sizes_their_multiples_say():
    # Shapes only (meta device, no weights, no compute): the published architectures, not the tiny ones.
    import torch
    from diffusers import UNet2DConditionModel

    from nbhelpers.models.configs import sd_unet_config
    from nbhelpers.models.flexible_unet import build_full_size_on_meta

    with torch.device("meta"):
        sd = UNet2DConditionModel.from_config(sd_unet_config(2))
    deci = build_full_size_on_meta()

    def run(unet, height, width):
        latents = torch.empty(2, 4, height // 8, width // 8, device="meta")
        context = torch.empty(2, 77, 768, device="meta")
        with torch.no_grad():
            return tuple(unet(latents, torch.tensor([500, 500], device="meta"), context).sample.shape)

    assert run(sd, 72, 64) == (2, 4, 9, 8)  # 8 px steps: diffusers' UNet pads odd latent sizes
    assert run(deci, 128, 64) == (2, 4, 16, 8)
    for height in (72, 96):  # not multiples of 64: the flexible UNet's skips would not line up
        with pytest.raises(ValueError, match="divisible by 64"):
            run(deci, height, 64)
