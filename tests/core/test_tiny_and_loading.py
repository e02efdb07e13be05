import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from nbhelpers.catalog import UnknownModelError
from nbhelpers.loading import ModelLoadError, load_pipeline
from nbhelpers.models.configs import TINY_RESOLUTION
from nbhelpers.models.deci_pipeline import DeciDiffusionPipeline
from nbhelpers.models.flexible_unet import FlexibleUNet2DConditionModel
from nbhelpers.models.tiny import build_tiny_pipeline, tiny_pipeline_path

HUB_LAYOUT = {
    "model_index.json",
    "feature_extractor",
    "safety_checker",
    "scheduler",
    "text_encoder",
    "tokenizer",
    "unet",
    "vae",
}


@pytest.mark.parametrize("name", ["sd-v1-4", "sd-v1-5", "small-sd-v0", "deci-v1"])
def test_tiny_folders_mirror_the_hub_layout(name):
    folder = tiny_pipeline_path(name)
    entries = {p.name for p in folder.iterdir()}
    assert HUB_LAYOUT <= entries
    index = json.loads((folder / "model_index.json").read_text())
    if name == "deci-v1":
        assert "flexible_unet" in entries
        assert index["_class_name"] == "DeciDiffusionPipeline"
        assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
        flex = json.loads((folder / "flexible_unet" / "config.json").read_text())
        assert flex["_class_name"] == "FlexibleUNet2DConditionModel" and "configurations" in flex
    else:
        assert "flexible_unet" not in entries
        assert index["_class_name"] == "StableDiffusionPipeline"
        assert index["scheduler"] == ["diffusers", "PNDMScheduler"]
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_tiny_build_is_deterministic(tmp_path):
    a = build_tiny_pipeline("sd-v1-4", tmp_path / "a")
    b = build_tiny_pipeline("sd-v1-4", tmp_path / "b")
    for sub in ("unet", "vae", "text_encoder"):
        files = sorted(p.name for p in (a / sub).iterdir())
        for file in files:
            assert (a / sub / file).read_bytes() == (b / sub / file).read_bytes(), f"{sub}/{file} differs"


def test_tiny_sd_pipeline_generates(tiny_sd):
    assert isinstance(tiny_sd, StableDiffusionPipeline)
    info = tiny_sd.nbhelpers_info
    assert info.stand_in == "tiny" and info.device == torch.device("cpu") and info.dtype == torch.float32
    assert "random weights" in info.label
    out = tiny_sd("a big owl", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, TINY_RESOLUTION, TINY_RESOLUTION, 3)
    assert out.nsfw_content_detected == [False]


def test_deci_pipeline_uses_flexible_unet_and_published_scheduler(tiny_deci):
    assert isinstance(tiny_deci, DeciDiffusionPipeline)
    assert isinstance(tiny_deci.unet, FlexibleUNet2DConditionModel)
    assert isinstance(tiny_deci.scheduler, DDIMScheduler)
    published = {
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "timestep_spacing": "trailing",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "num_train_timesteps": 1000,
    }
    assert {k: tiny_deci.scheduler.config[k] for k in published} == published


def test_deci_defaults_applied_when_caller_gives_none(tiny_deci, monkeypatch):
    seen = {}
    original = StableDiffusionPipeline.__call__

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", spy)
    out = tiny_deci("an owl", output_type="np", generator=torch.Generator().manual_seed(0))
    assert (seen["num_inference_steps"], seen["guidance_rescale"], seen["guidance_scale"]) == (30, 0.7, 7.5)
    assert len(tiny_deci.scheduler.timesteps) == 30
    assert out.images.shape == (1, TINY_RESOLUTION, TINY_RESOLUTION, 3)
    tiny_deci("an owl", num_inference_steps=3, guidance_rescale=0.0, output_type="np")
    assert (seen["num_inference_steps"], seen["guidance_rescale"]) == (3, 0.0)


def test_safety_checker_switch():
    pipe = load_pipeline("sd-v1-4", stand_in="tiny", device="cpu", safety_checker=False)
    assert pipe.safety_checker is None
    out = pipe("x", num_inference_steps=1, output_type="np")
    assert out.nsfw_content_detected is None


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModelError, match="deci-v1.*small-sd-v0|sd-v1-4"):
        load_pipeline("stable-diffusion-9", device="cpu")


def test_tiny_mode_refuses_models_outside_the_catalog():
    with pytest.raises(UnknownModelError, match="tiny stand-in exists only for catalog models"):
        load_pipeline("someone/some-model", stand_in="tiny", device="cpu")


def test_missing_local_folder_and_bad_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pipeline("./no/such/folder", stand_in="none", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="model_index.json is missing"):
        load_pipeline(tmp_path / "empty", stand_in="none", device="cpu")


@pytest.mark.slow
def test_unreachable_hub_says_how_to_go_offline(tmp_path):
    # A fresh process: empty hub cache, offline. The real weights cannot be had, and the message says why
    # and what to do instead.
    code = textwrap.dedent(
        """
        from nbhelpers.loading import ModelLoadError, load_pipeline
        try:
            load_pipeline("sd-v1-5", stand_in="none", device="cpu")
        except ModelLoadError as err:
            print("MESSAGE:", err)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "NBHELPERS_STAND_IN": "none"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "MESSAGE:" in result.stdout, result.stderr[-2000:]
    message = result.stdout
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message
    assert "stand_in='toy'" in message and "NBHELPERS_STAND_IN=toy" in message and "--tiny" in message
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in message and "huggingface-cli" not in message


@pytest.mark.slow
def test_loading_by_hub_id_from_a_prepopulated_offline_cache(tmp_path):
    # The exact path a user runs online (hub ids, subfolders), served from a Hugging Face cache that holds
    # the tiny folders under the real repo ids. DeciDiffusion's SD-shaped unet/ is left out of the cache:
    # loading must never need it.
    code = textwrap.dedent(
        """
        import torch
        from nbhelpers.models.tiny import populate_hf_cache
        from huggingface_hub import constants
        populate_hf_cache(["deci-v1"], constants.HF_HUB_CACHE, skip_subfolders=("unet",))
        populate_hf_cache(["sd-v1-5", "small-sd-v0"], constants.HF_HUB_CACHE)
        from nbhelpers.loading import load_pipeline
        # The small-sd id as the seed tutorial writes it, with a trailing slash.
        for name in ["Deci/DeciDiffusion-v1-0", "runwayml/stable-diffusion-v1-5", "OFA-Sys/small-stable-diffusion-v0/"]:
            pipe = load_pipeline(name, stand_in="none", device="cpu", progress=False)
            out = pipe("an owl", num_inference_steps=2, output_type="np")
            print("LOADED", name, type(pipe).__name__, type(pipe.unet).__name__, pipe.nbhelpers_info.stand_in,
                  out.images.shape)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "NBHELPERS_STAND_IN": "none"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("LOADED")]
    assert len(lines) == 3, result.stderr[-3000:]
    assert "DeciDiffusionPipeline FlexibleUNet2DConditionModel None (1, 64, 64, 3)" in lines[0]
    assert "StableDiffusionPipeline UNet2DConditionModel None" in lines[1]
    assert "StableDiffusionPipeline UNet2DConditionModel None" in lines[2]


def test_saved_deci_pipeline_reloads_from_a_local_folder(tiny_deci, tmp_path):
    tiny_deci.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["unet"][0].startswith("nbhelpers") and index["unet"][1] == "FlexibleUNet2DConditionModel"
    pipe = load_pipeline(tmp_path / "saved", device="cpu", progress=False)
    assert isinstance(pipe, DeciDiffusionPipeline) and isinstance(pipe.unet, FlexibleUNet2DConditionModel)
    for (name, a), b in zip(tiny_deci.unet.state_dict().items(), pipe.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_deci_folder_with_only_an_fp16_variant_file_loads(tmp_path):
    import shutil

    folder = shutil.copytree(tiny_pipeline_path("deci-v1"), tmp_path / "deci")
    weights = folder / "flexible_unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_name("diffusion_pytorch_model.fp16.safetensors"))
    pipe = load_pipeline(folder, device="cpu", progress=False)
    assert isinstance(pipe.unet, FlexibleUNet2DConditionModel)


def test_memory_savers_follow_gpu_memory(monkeypatch):
    import nbhelpers.loading as loading

    monkeypatch.setattr(loading, "total_memory_bytes", lambda device: 6 * 2**30)  # a 6 GiB GPU
    pipe = load_pipeline("sd-v1-4", stand_in="tiny", device="cpu", progress=False)
    assert pipe.nbhelpers_info.memory_savers == ("attention_slicing", "vae_slicing")
    assert pipe.vae.use_slicing
    monkeypatch.setattr(loading, "total_memory_bytes", lambda device: 40 * 2**30)
    roomy = load_pipeline("sd-v1-4", stand_in="tiny", device="cpu", progress=False)
    assert roomy.nbhelpers_info.memory_savers == () and not roomy.vae.use_slicing
    with pytest.raises(ValueError, match="memory_savers"):
        load_pipeline("sd-v1-4", stand_in="tiny", device="cpu", memory_savers="lots")
