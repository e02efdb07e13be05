"""Where a UNet spends its step: parameters and FLOPs by resolution level add up, and show DeciDiffusion's design."""

from __future__ import annotations

import pytest
import torch

from nbhelpers.catalog import get_spec
from nbhelpers.models.components import build_unet
from nbhelpers.perf.flops import (
    ATTENTION,
    count_parameters,
    full_size_component_parameters,
    model_work_by_level,
    unet_step_flops,
    unet_work_by_level,
)


@pytest.mark.parametrize("name", ["sd-v1-5", "deci-v1"])
def test_work_by_level_adds_up_to_the_whole_unet(name):
    unet = build_unet(get_spec(name), tiny=True)
    rows = unet_work_by_level(unet, height=64, width=64)
    assert sum(r["parameters"] for r in rows) == count_parameters(unet)
    assert sum(r["flops"] for r in rows) == unet_step_flops(unet, height=64, width=64)
    assert [r["level"] for r in rows][0] == "8x8"  # 64 px pictures: 8x8 latents, the largest level first


def test_decidiffusion_drops_the_attention_at_the_largest_level_and_that_is_its_saving():
    sd = {(r["level"], r["kind"]): r for r in model_work_by_level("sd-v1-5")}
    deci = {(r["level"], r["kind"]): r for r in model_work_by_level("deci-v1")}
    assert ("64x64", ATTENTION) in sd and ("64x64", ATTENTION) not in deci
    saving = sum(r["flops"] for r in sd.values()) - sum(r["flops"] for r in deci.values())
    # Published counts: 1606.5 and 1228.6 GFLOP per guided step; SD's 64x64 attention is about the difference.
    assert saving / 1e9 == pytest.approx(1606.5 - 1228.6, rel=0.001)
    assert sd[("64x64", ATTENTION)]["flops"] == pytest.approx(saving, rel=0.05)


def test_whole_model_parameters_reconcile_the_published_figures():
    deci, sd = full_size_component_parameters("deci-v1"), full_size_component_parameters("sd-v1-5")
    assert sum(deci.values()) == 1_021_461_227  # the blog's "1.02B": UNet + CLIP text encoder + VAE
    assert (deci["text_encoder"], deci["vae"]) == (sd["text_encoder"], sd["vae"]) == (123_060_480, 83_653_863)
    assert round(sum(sd.values()) / 1e9, 2) == 1.07
    with torch.device("meta"):
        assert deci["unet"] == count_parameters(build_unet(get_spec("deci-v1")))
