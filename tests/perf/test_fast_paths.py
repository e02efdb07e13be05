"""The few-step fast paths: the authors' settings, the exact loading code offline, and clear refusals."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from nbhelpers.generation import generate
from nbhelpers.loading import load_pipeline
from nbhelpers.models.tiny import populate_hf_cache
from nbhelpers.perf.fast_path_loras import (
    populate_hf_cache_with_fast_paths,
    random_lora_state_dict,
    tiny_fast_path_folder,
)
from nbhelpers.perf.fast_paths import (
    FAST_PATHS,
    FastPathError,
    adapter_layers,
    apply_fast_path,
    check_adapter_fits,
    fast_path_downloaded,
    fast_path_of,
)


def test_the_table_holds_each_authors_published_settings():
    lcm, hyper, tcd = FAST_PATHS["lcm-lora"], FAST_PATHS["hyper-sd-cfg"], FAST_PATHS["tcd-lora"]
    assert (lcm.repo_id, lcm.scheduler, lcm.num_inference_steps, lcm.guidance_scale) == (
        "latent-consistency/lcm-lora-sdv1-5",
        "LCMScheduler",
        4,
        0.0,
    )
    assert (hyper.weight_name, hyper.scheduler, hyper.scheduler_options) == (
        "Hyper-SD15-8steps-CFG-lora.safetensors",
        "DDIMScheduler",
        {"timestep_spacing": "trailing"},
    )
    assert (hyper.num_inference_steps, hyper.guidance_scale, hyper.unet_passes) == (8, 5.0, 16)
    assert tcd.generation_defaults() == {"num_inference_steps": 4, "guidance_scale": 0.0, "eta": 0.3}
    assert lcm.unet_passes == 4  # guidance off: one UNet pass per step


def _fused_delta(lora: dict[str, torch.Tensor], layer: str, weight: torch.Tensor) -> torch.Tensor:
    key = "lora_unet_" + layer.replace(".", "_")
    down, up = lora[f"{key}.lora_down.weight"].float(), lora[f"{key}.lora_up.weight"].float()
    scale = float(lora[f"{key}.alpha"]) / down.shape[0]
    if weight.dim() == 4:  # a convolution: the up projection is 1x1
        return scale * torch.einsum("or,rihw->oihw", up[:, :, 0, 0], down)
    return scale * up @ down


@pytest.mark.parametrize("name", list(FAST_PATHS))
def test_tiny_fast_path_fuses_the_adapter_swaps_the_scheduler_and_sets_the_defaults(name):
    plain = load_pipeline("sd-v1-5", stand_in="tiny", device="cpu", progress=False)
    pipe = load_pipeline("sd-v1-5", stand_in="tiny", device="cpu", progress=False, fast_path=name)
    path = FAST_PATHS[name]
    assert fast_path_of(pipe) is path and pipe.nbhelpers_info.fast_path == name
    assert pipe.nbhelpers_info.label == f"sd-v1-5 + {name} (tiny, random weights)"
    assert type(pipe.scheduler).__name__ == path.scheduler
    for option, value in path.scheduler_options.items():
        assert pipe.scheduler.config[option] == value
    # Fused, then unloaded: the weights carry the adapter, no LoRA layer is left in the forward pass.
    assert not [n for n, _ in pipe.unet.named_modules() if "lora" in n.lower()]
    lora = load_file(tiny_fast_path_folder(name) / path.weight_name)
    before, after = plain.unet.state_dict(), pipe.unet.state_dict()
    for layer in ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", "up_blocks.3.resnets.2.conv1"):
        expected = before[f"{layer}.weight"] + _fused_delta(lora, layer, before[f"{layer}.weight"])
        torch.testing.assert_close(after[f"{layer}.weight"], expected, atol=1e-4, rtol=1e-3)
    assert torch.equal(after["conv_in.weight"], before["conv_in.weight"])  # not an adapter layer
    result = generate(pipe, "an owl")
    assert result.settings == path.generation_defaults()
    assert result.model == pipe.nbhelpers_info.label


def test_the_exact_hub_loading_code_runs_offline_from_a_prepopulated_cache(tmp_path):
    # The user's code path: the pipeline and the adapters by their hub ids, from a Hugging Face cache that holds
    # tiny stand-ins under the real names (HF_HUB_OFFLINE=1 is set for the whole test session).
    populate_hf_cache(["sd-v1-5"], tmp_path)
    files = populate_hf_cache_with_fast_paths(cache_dir=tmp_path)
    assert {f.name for f in files.values()} == {p.weight_name for p in FAST_PATHS.values()}
    assert all(fast_path_downloaded(name, cache_dir=tmp_path) for name in FAST_PATHS)
    for name in FAST_PATHS:
        pipe = load_pipeline(
            "runwayml/stable-diffusion-v1-5",
            stand_in="none",
            device="cpu",
            progress=False,
            cache_dir=tmp_path,
            fast_path=name,
        )
        assert pipe.nbhelpers_info.stand_in is None and fast_path_of(pipe).name == name
        assert generate(pipe, "an owl", num_inference_steps=2).images[0].size == (64, 64)


def test_the_diffusers_key_layout_loads_through_the_same_code(tmp_path):
    # Which layout the TCD and Hyper-SD files use was not checked against the real files; diffusers' loader reads
    # both, and so must this code path.
    populate_hf_cache(["sd-v1-5"], tmp_path)
    (file,) = populate_hf_cache_with_fast_paths(["tcd-lora"], tmp_path, key_format="diffusers").values()
    assert all(key.startswith("unet.") and ".lora." in key for key in load_file(file))
    plain = load_pipeline("sd-v1-5", stand_in="tiny", device="cpu", progress=False)
    pipe = load_pipeline("sd-v1-5", stand_in="none", device="cpu", cache_dir=tmp_path, fast_path="tcd-lora")
    layer = "mid_block.attentions.0.proj_out.weight"
    assert not torch.equal(pipe.unet.state_dict()[layer], plain.unet.state_dict()[layer])


def test_a_missing_adapter_offline_says_how_to_download_it(tmp_path):
    populate_hf_cache(["sd-v1-5"], tmp_path)
    assert not fast_path_downloaded("hyper-sd-cfg", cache_dir=tmp_path)
    with pytest.raises(FastPathError) as caught:
        load_pipeline("sd-v1-5", stand_in="none", device="cpu", cache_dir=tmp_path, fast_path="hyper-sd-cfg")
    assert "hf download ByteDance/Hyper-SD Hyper-SD15-8steps-CFG-lora.safetensors" in str(caught.value)


def test_decidiffusion_is_refused_before_anything_loads(monkeypatch):
    import nbhelpers.loading as loading

    def no_loading(*args, **kwargs):
        raise AssertionError("the pipeline was loaded before the fast path was refused")

    monkeypatch.setattr(loading, "_from_pretrained", no_loading)
    with pytest.raises(FastPathError) as caught:
        load_pipeline("deci-v1", stand_in="none", fast_path="lcm-lora")
    message = str(caught.value)
    assert "FlexibleUNet2DConditionModel" in message and "modules_list" in message and "64x64" in message
    assert "do not exist" in message


def test_a_loaded_decidiffusion_pipeline_is_refused_and_left_unchanged(tiny_deci):
    scheduler = tiny_deci.scheduler
    with pytest.raises(FastPathError, match="flexible UNet"):
        apply_fast_path(tiny_deci, "tcd-lora")
    assert tiny_deci.scheduler is scheduler and fast_path_of(tiny_deci) is None


def test_small_sd_toy_stand_ins_and_unknown_names_are_refused():
    with pytest.raises(FastPathError, match="do not exist in this UNet2DConditionModel"):
        load_pipeline("small-sd-v0", stand_in="tiny", fast_path="lcm-lora")
    with pytest.raises(FastPathError, match="toy stand-ins"):
        load_pipeline("sd-v1-5", stand_in="toy", fast_path="lcm-lora")
    with pytest.raises(FastPathError, match="lcm-lora, hyper-sd-cfg, tcd-lora"):
        load_pipeline("sd-v1-5", stand_in="tiny", fast_path="lcm")


def test_the_fast_path_comes_before_fused_projections_and_compilation():
    pipe = SimpleNamespace(nbhelpers_optimize="fused")
    with pytest.raises(FastPathError, match="apply the fast path first"):
        apply_fast_path(pipe, "lcm-lora")


def test_the_adapters_fit_sd_v1_layouts_only():
    from nbhelpers.catalog import get_spec
    from nbhelpers.models.components import build_unet

    with torch.device("meta"):
        check_adapter_fits(build_unet(get_spec("sd-v1-4")))  # full size
        check_adapter_fits(build_unet(get_spec("sd-v1-5"), tiny=True))  # the tiny layout: same names
        with pytest.raises(FastPathError):
            check_adapter_fits(build_unet(get_spec("deci-v1")))


def test_random_lora_files_cover_every_adapter_layer_in_both_layouts():
    from diffusers import UNet2DConditionModel

    from nbhelpers.models.configs import tiny_sd_unet_config

    with torch.device("meta"):
        unet = UNet2DConditionModel(**tiny_sd_unet_config(2))
    layers = adapter_layers(unet)
    kohya = random_lora_state_dict(unet)
    assert len(kohya) == 3 * len(layers)
    assert "lora_unet_up_blocks_2_attentions_0_proj_in.lora_up.weight" in kohya  # the LCM-LoRA file's layout
    diffusers_layout = random_lora_state_dict(unet, key_format="diffusers")
    assert "unet.up_blocks.2.attentions.0.proj_in.lora.up.weight" in diffusers_layout
    with pytest.raises(ValueError, match="key_format"):
        random_lora_state_dict(unet, key_format="peft")


def test_the_library_guide_lists_every_fast_path_with_the_tables_settings():
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[2] / "docs" / "library.md").read_text(encoding="utf-8")
    for path in FAST_PATHS.values():
        (row,) = [line for line in guide.splitlines() if line.startswith(f"| `{path.name}` |")]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert path.repo_id in cells[1] and path.weight_name in cells[1] and path.scheduler in cells[2]
        assert cells[3].split(" ")[0] == str(path.num_inference_steps)
        assert cells[4].split(" ")[0].rstrip(",") == f"{path.guidance_scale:g}"
        assert all(f"{key}={value}" in cells[5] for key, value in path.call_options.items())
        assert path.source in cells[6]
