"""A pipeline folder is input from anyone: what it names, its weight files and its configs are checked before
anything is loaded or allocated (nbhelpers.pipeline_folder, used by load_pipeline for every local folder)."""

import json
import os
import shutil
import sys

import pytest
import torch

import nbhelpers.pipeline_folder as pipeline_folder
from nbhelpers.catalog import UnknownModelError
from nbhelpers.errors import ConfigurationError
from nbhelpers.loading import ModelLoadError, load_pipeline
from nbhelpers.models.tiny import tiny_pipeline_path
from nbhelpers.pipeline_folder import PipelineFolderError, check_pipeline_folder

ROOMY = {"bytes_per_parameter": 4, "memory_bytes": 2**40, "memory_name": "RAM"}


@pytest.fixture
def folder(tmp_path):
    """A copy of the tiny SD v1.5 pipeline folder, for a test to damage."""
    return shutil.copytree(tiny_pipeline_path("sd-v1-5"), tmp_path / "pipeline")


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


class _Payload:
    """A pickle that, if ever unpickled with full pickle, creates the file it names."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_a_sound_folder_passes_and_its_parameters_are_counted_without_loading(folder, tiny_sd):
    count = check_pipeline_folder(folder, **ROOMY)
    loaded = sum(
        p.numel()
        for name in ("unet", "vae", "text_encoder", "safety_checker")
        for p in getattr(tiny_sd, name).parameters()
    )
    assert count == loaded


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"unet": ["diffusers", "NoSuchUNet"]}, r'names unet as \["diffusers", "NoSuchUNet"\], but diffusers has no'),
        ({"unet": ["this", "Zen"]}, "may name classes of diffusers, transformers or nbhelpers.models only, not 'this'"),
        ({"unet": ["os", "system"]}, "only, not 'os'"),
        ({"unet": ["diffusers", "__class__"]}, r"an entry must be \[library, class name\]"),
        ({"unet": [7, "UNet2DConditionModel"]}, r"an entry must be \[library, class name\]"),
        ({"_class_name": "NoSuchPipeline"}, "names the pipeline class 'NoSuchPipeline', which diffusers does not have"),
        ({"_class_name": None}, "names the pipeline class None"),
    ],
)
def test_model_index_may_name_only_classes_of_the_libraries(folder, changes, match):
    _edit_json(folder / "model_index.json", **changes)
    with pytest.raises(PipelineFolderError, match=match):
        load_pipeline(folder, device="cpu", progress=False)
    assert "this" not in sys.modules  # the module a hostile entry names is never imported (`this` prints on import)


@pytest.mark.parametrize(
    "content, match",
    [("[1, 2]", "must hold a JSON object, not list"), ("{not json", "is not a readable model_index.json")],
)
def test_a_model_index_that_is_no_json_object_is_refused(folder, content, match):
    (folder / "model_index.json").write_text(content)
    with pytest.raises(ConfigurationError, match=match):
        load_pipeline(folder, device="cpu", progress=False)


def test_an_oversized_model_index_is_not_read(folder):
    (folder / "model_index.json").write_bytes(b" " * (2 << 20))
    with pytest.raises(PipelineFolderError, match="is 2,097,152 bytes, not a model_index.json"):
        load_pipeline(folder, device="cpu", progress=False)


def test_pickled_weights_are_never_unpickled(folder, tmp_path):
    marker = tmp_path / "the-pickle-ran"
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    torch.save({"conv_in.weight": _Payload(marker)}, folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(
        PipelineFolderError, match=r"unet holds only pickle weight files \(diffusion_pytorch_model.bin\)"
    ):
        load_pipeline(folder, device="cpu", progress=False)
    # The same pickle under a .safetensors name is read as safetensors and refused, never unpickled.
    (folder / "unet" / "diffusion_pytorch_model.bin").rename(weights)
    with pytest.raises(PipelineFolderError, match="is not a complete safetensors file"):
        load_pipeline(folder, device="cpu", progress=False)
    assert not marker.exists()


def test_the_loader_asks_diffusers_for_safetensors_only(folder, monkeypatch):
    seen = {}

    def spy_from_pretrained(loader, source, is_local, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr("nbhelpers.loading._from_pretrained", spy_from_pretrained)
    with pytest.raises(RuntimeError, match="stop here"):
        load_pipeline(folder, device="cpu", progress=False)
    assert seen["use_safetensors"] is True


@pytest.mark.parametrize("keep", [1000, 0.5])
def test_a_truncated_safetensors_file_says_it_was_cut_short(folder, keep):
    weights = folder / "text_encoder" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(PipelineFolderError, match="model.safetensors is not a complete safetensors file .*interrupted"):
        load_pipeline(folder, device="cpu", progress=False)


def test_a_component_without_weights_is_refused(folder):
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(PipelineFolderError, match=r"vae holds no weight file \(.safetensors\)"):
        load_pipeline(folder, device="cpu", progress=False)


def test_a_config_too_large_for_memory_is_refused_with_the_numbers_before_any_allocation(folder):
    # 2.1e13 parameters: 80 TiB in float32. Built for real this tries to allocate; on the meta device it is
    # counted, and the count stops once it passes what fits.
    _edit_json(folder / "unet" / "config.json", block_out_channels=[1 << 20] * 4)
    with pytest.raises(
        PipelineFolderError,
        match=r"describes a model of at least [\d,]+ parameters \([\d,.]+ GiB at "
        r"4 bytes each\), more than this machine's [\d,.]+ GiB of RAM; unet/config.json alone",
    ):
        load_pipeline(folder, device="cpu", progress=False)


def test_the_memory_that_counts_is_the_gpus_unless_weights_stay_on_the_cpu(folder, monkeypatch):
    import nbhelpers.loading as loading

    monkeypatch.setattr(loading, "total_memory_bytes", lambda device: 2**20)  # a "GPU" of 1 MiB
    with pytest.raises(PipelineFolderError, match="more than this machine's 0.0 GiB of GPU memory"):
        load_pipeline(folder, device="cpu", progress=False, memory_savers="off")
    # With CPU offload (what "auto" picks below 5 GiB) the weights live in RAM: the folder loads.
    pipe = load_pipeline(folder, device="cpu", progress=False, memory_savers="auto")
    assert pipe.unet is not None


@pytest.mark.parametrize(
    "component, changes, match",
    [
        (
            "text_encoder",
            {"vocab_size": 100_000_000},
            r"embeddings.token_embedding.weight is \[100000000, 32\] in "
            r"the config but \[49408, 32\] in the weight file",
        ),
        ("unet", {"cross_attention_dim": 64}, "unet/config.json does not match its weights"),
        ("unet", {"block_out_channels": "wide"}, "does not describe a UNet2DConditionModel that can be built"),
        ("safety_checker", {"projection_dim": 4096}, "safety_checker/config.json does not match its weights"),
    ],
)
def test_a_config_that_does_not_fit_its_weights_is_refused_before_loading(folder, component, changes, match):
    _edit_json(folder / component / "config.json", **changes)
    with pytest.raises(PipelineFolderError, match=match):
        check_pipeline_folder(folder, **ROOMY)


def test_a_config_with_absurdly_many_layers_is_refused(folder, monkeypatch):
    monkeypatch.setattr(pipeline_folder, "MAX_MODULES", 50)  # the tiny UNet has a few hundred modules
    with pytest.raises(PipelineFolderError, match="unet/config.json describes a model of more than 50 layers"):
        check_pipeline_folder(folder, **ROOMY)


@pytest.mark.parametrize(
    "model, error, match",
    [
        ("a" * 300, UnknownModelError, "Unknown model 'aaaa"),  # was a raw OSError: file name too long
        ("x\0y", UnknownModelError, "Unknown model"),
        ("", ConfigurationError, "model must be a catalog name"),
        (42, ConfigurationError, "model must be a catalog name .*got 42"),
    ],
)
def test_model_names_that_are_no_path_are_one_line(model, error, match):
    with pytest.raises(error, match=match):
        load_pipeline(model, stand_in="none", device="cpu")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"custom_pipeline": "someone/pipeline"}, "custom_pipeline: nbhelpers runs no code that comes with a model"),
        ({"trust_remote_code": True}, "trust_remote_code: nbhelpers runs no code"),
        ({"use_safetensors": False}, "use_safetensors=False would unpickle"),
        ({"scheduler": "magic"}, "Unknown scheduler 'magic'; choose one of ddim"),
        ({"optimize": "warp-speed"}, "Unknown optimize mode 'warp-speed'"),
        ({"memory_savers": "lots"}, "memory_savers must be 'auto'"),
        ({"dtype": "int8"}, "Unknown dtype 'int8'"),
        ({"stand_in": "huge"}, "stand_in='huge' is not a stand-in"),
    ],
)
def test_unsafe_or_unknown_options_are_refused_before_loading(monkeypatch, kwargs, match):
    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded despite a bad option")

    monkeypatch.setattr("nbhelpers.loading._from_pretrained", must_not_load)
    with pytest.raises(ConfigurationError, match=match):
        load_pipeline("sd-v1-5", **{"stand_in": "tiny", "device": "cpu", **kwargs})


def test_a_file_given_as_the_model_says_it_is_no_pipeline_folder(folder):
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    with pytest.raises(ModelLoadError, match="is a file, not a pipeline folder: give the folder that holds"):
        load_pipeline(weights, stand_in="none", device="cpu")


def test_a_config_that_is_a_fifo_is_refused_without_blocking(folder):
    config = folder / "unet" / "config.json"
    config.unlink()
    os.mkfifo(config)  # reading a FIFO blocks until someone writes to it
    with pytest.raises(PipelineFolderError, match="unet/config.json is not a readable model config"):
        check_pipeline_folder(folder, **ROOMY)
