"""The package layout keeps its public surface, and pipeline folders saved by older versions still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import nbhelpers

OLD_FOLDER = Path(__file__).parent / "fixtures" / "deci_saved_by_nbhelpers_0_1"
PACKAGE = Path(nbhelpers.__file__).parent


def _generate(pipe) -> np.ndarray:
    return pipe(
        "a red circle", num_inference_steps=2, guidance_scale=7.5, height=64, width=64,
        generator=torch.Generator().manual_seed(0), output_type="np",
    ).images[0]


def test_every_lazy_export_resolves():
    for name in nbhelpers.__all__:
        assert getattr(nbhelpers, name) is not None, name
    with pytest.raises(AttributeError):
        nbhelpers.no_such_name  # noqa: B018


def test_feature_subpackages_keep_their_public_names():
    from nbhelpers import FlexibleUNet2DConditionModel, generate, load_pipeline, show_images  # noqa: F401
    from nbhelpers.daam import set_seed, trace  # noqa: F401
    from nbhelpers.dreambooth import DreamBoothConfig, train_dreambooth  # noqa: F401


def test_top_level_holds_only_the_shared_core():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 13, modules
    for feature in ("models", "perf", "dreambooth", "endpoints", "daam"):
        assert (PACKAGE / feature / "__init__.py").is_file()
        assert (PACKAGE / feature / "__init__.py").read_text(encoding="utf-8").startswith('"""'), feature


def test_folder_saved_by_version_0_1_loads_and_generates_the_same_image():
    """The fixture's model_index.json names ``nbhelpers.flexible_unet``, the module of the flat layout."""
    from nbhelpers.loading import load_pipeline

    index = json.loads((OLD_FOLDER / "model_index.json").read_text(encoding="utf-8"))
    assert index["unet"] == ["nbhelpers.flexible_unet", "FlexibleUNet2DConditionModel"]
    pipe = load_pipeline(OLD_FOLDER, device="cpu", progress=False)
    assert type(pipe.unet) is nbhelpers.FlexibleUNet2DConditionModel
    expected = np.load(OLD_FOLDER / "expected_image_seed0_2steps.npy")
    # Thread count changes CPU rounding at the 1e-6 level; the pixels are in [0, 1].
    np.testing.assert_allclose(_generate(pipe), expected, atol=1e-4)


def test_plain_diffusers_loads_the_old_folder():
    from diffusers import StableDiffusionPipeline

    import nbhelpers.flexible_unet  # noqa: F401 - diffusers resolves only modules already imported

    pipe = StableDiffusionPipeline.from_pretrained(OLD_FOLDER)
    assert type(pipe.unet).__name__ == "FlexibleUNet2DConditionModel"


def test_folder_saved_now_reloads(tmp_path: Path):
    from nbhelpers.loading import load_pipeline

    pipe = load_pipeline(OLD_FOLDER, device="cpu", progress=False)
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text(encoding="utf-8"))
    assert index["unet"] == ["nbhelpers.models.flexible_unet", "FlexibleUNet2DConditionModel"]
    reloaded = load_pipeline(tmp_path / "saved", device="cpu", progress=False)
    np.testing.assert_array_equal(_generate(reloaded), _generate(pipe))
    shutil.rmtree(tmp_path / "saved")
