"""The package's public surface: lazy exports resolve, feature subpackages keep their names, saved folders reload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import nbhelpers


def _generate(pipe) -> np.ndarray:
    return pipe(
        "a red circle",
        num_inference_steps=2,
        guidance_scale=7.5,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]


def test_every_lazy_export_resolves():
    for name in nbhelpers.__all__:
        assert getattr(nbhelpers, name) is not None, name
    with pytest.raises(AttributeError):
        nbhelpers.no_such_name  # noqa: B018


def test_feature_subpackages_keep_their_public_names():
    from nbhelpers import FlexibleUNet2DConditionModel, dreambooth, generate, load_pipeline, show_images  # noqa: F401
    from nbhelpers.daam import set_seed, trace  # noqa: F401
    from nbhelpers.dreambooth import DreamBoothConfig, train_dreambooth  # noqa: F401

    # The settings moved to torch-free modules (for the commands' --help); the old paths still import them.
    from nbhelpers.perf.benchmark import MAX_TIMED_CALLS, WEIGHTS, BenchSettings  # noqa: F401
    from nbhelpers.toy.train import RENAMED_SETTINGS, ToyTrainingConfig, ToyTrainingConfigError  # noqa: F401

    for name in dreambooth.__all__:  # the trainer's, memory plan's and checkpoints' names are lazy exports
        assert getattr(dreambooth, name) is not None, name
    with pytest.raises(AttributeError):
        dreambooth.no_such_name  # noqa: B018


def test_a_saved_deci_folder_names_the_flexible_unet_module_and_reloads(tiny_deci, tmp_path: Path):
    from nbhelpers.loading import load_pipeline

    tiny_deci.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text(encoding="utf-8"))
    assert index["unet"] == ["nbhelpers.models.flexible_unet", "FlexibleUNet2DConditionModel"]
    reloaded = load_pipeline(tmp_path / "saved", device="cpu", progress=False)
    np.testing.assert_array_equal(_generate(reloaded), _generate(tiny_deci))
