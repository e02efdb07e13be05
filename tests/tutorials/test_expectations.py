"""The estimates at the top of the notebooks follow from the published configs and timing they cite."""

import pytest
import torch

from nbhelpers.models.configs import CLIP_VIT_L_TEXT_CONFIG, SD_VAE_CONFIG
from nbhelpers.models.random_weights import build_random_safety_checker
from nbhelpers.perf.flops import count_parameters, model_step_flops
from nbhelpers.tutorials import expectations


def test_component_counts_match_the_configs():
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        assert count_parameters(build_random_safety_checker()) == expectations.SAFETY_CHECKER_PARAMS
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L_TEXT_CONFIG))
        assert count_parameters(text_encoder) == expectations.TEXT_ENCODER_PARAMS
        assert count_parameters(AutoencoderKL(**SD_VAE_CONFIG)) == expectations.VAE_PARAMS


def test_step_flops_table_matches_the_count():
    # small-sd is the cheapest to count; the others are checked in tests/perf/test_benchmark.py.
    counted = model_step_flops("small-sd-v0") / 1e9
    assert counted == pytest.approx(expectations.GUIDED_STEP_GFLOP["small-sd-v0"], abs=0.1)


def test_sd_fp16_download_is_the_known_size_and_t4_reproduces_the_a10_calibration():
    # The SD v1.x fp16 variant files (unet, text encoder, vae, safety checker) are about 2.7 GB on the hub.
    assert expectations.download_bytes("sd-v1-5") / 1e9 == pytest.approx(2.74, abs=0.01)
    assert expectations.download_bytes("sd-v1-5", bytes_per_param=4, safety_checker=False) / 1e9 == pytest.approx(
        4.26, abs=0.01
    )
    ratio = expectations.A10_FP16_TFLOPS / expectations.T4_FP16_TFLOPS
    assert expectations.t4_seconds_per_image("sd-v1-5") == pytest.approx(2.95 * ratio)
    # DeciDiffusion: cheaper step and 30 steps instead of 50.
    assert expectations.t4_seconds_per_image("deci-v1") == pytest.approx(2.95 * ratio * 1228.6 * 30 / (1606.5 * 50))
    rows = expectations.expectation_rows(["deci-v1"])
    assert rows[0]["model card"] == "https://huggingface.co/Deci/DeciDiffusion-v1-0"
    assert all("estimate" in key for key in rows[0] if key not in ("model", "model card", "steps"))
