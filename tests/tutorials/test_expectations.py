"""The estimates at the top of the notebooks follow from the published configs and timing they cite."""

import pytest
import torch

from nbhelpers.catalog import get_spec
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


def test_sd_fp16_download_is_the_known_size_and_t4_reproduces_the_published_t4_figure():
    # The SD v1.x fp16 variant files (unet, text encoder, vae, safety checker) are about 2.7 GB on the hub.
    assert expectations.download_bytes("sd-v1-5") / 1e9 == pytest.approx(2.74, abs=0.01)
    assert expectations.download_bytes("sd-v1-5", bytes_per_param=4, safety_checker=False) / 1e9 == pytest.approx(
        4.26, abs=0.01
    )
    # Calibrated on SD v1.5's published T4 time, which it gives back at 50 steps.
    assert expectations.t4_seconds_per_image("sd-v1-5") == pytest.approx(expectations.T4_SD15_SECONDS_50_STEPS)
    assert expectations.T4_SD15_SECONDS_50_STEPS == 7.83
    # DeciDiffusion: cheaper step and 30 steps instead of 50.
    assert expectations.t4_seconds_per_image("deci-v1") == pytest.approx(7.83 * 1228.6 * 30 / (1606.5 * 50))
    rows = expectations.expectation_rows(["deci-v1"])
    assert rows[0]["model card"] == "https://huggingface.co/Deci/DeciDiffusion-v1-0"
    assert rows[0]["licence (weights)"].startswith("CreativeML Open RAIL++-M")
    assert all(
        "estimate" in key
        for key in rows[0]
        if key not in ("model", "model card", "licence (weights)", "files", "steps")
    )
    assert "7.83 s" in expectations.estimate_note() and expectations.T4_TIMING_SOURCE in expectations.estimate_note()


def test_download_counts_fp32_files_where_the_repo_has_no_fp16_ones():
    # small-stable-diffusion ships fp32 .bin files only (its hub repo: 4.37 GB, a 335 MB VAE, a 492 MB text encoder);
    # DeciDiffusion ships fp16 files only, SD v1.x an fp16 variant.
    assert not get_spec("small-sd-v0").fp16_variant and not get_spec("small-sd-v0").fp16_files
    assert expectations.download_bytes("small-sd-v0") / 1e9 == pytest.approx(4.36, abs=0.01)
    assert expectations.VAE_PARAMS * 4 / 1e6 == pytest.approx(335, abs=1)
    assert expectations.TEXT_ENCODER_PARAMS * 4 / 1e6 == pytest.approx(492, abs=1)
    assert expectations.download_bytes("deci-v1") / 1e9 == pytest.approx(2.65, abs=0.01)
    rows = {row["model"]: row for row in expectations.expectation_rows(["deci-v1", "small-sd-v0"])}
    assert (rows["deci-v1"]["files"], rows["small-sd-v0"]["files"]) == ("fp16", "fp32 only")
    # Notebook 01's four models: each downloaded once.
    four = ["deci-v1", "sd-v1-5", "sd-v1-4", "small-sd-v0", "deci-v1"]
    assert expectations.total_download_gb(four) == pytest.approx(12.49, abs=0.01)
