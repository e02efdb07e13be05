import pytest
import torch

from nbhelpers.device import available_devices, pick_device, pick_dtype
from nbhelpers.errors import ConfigurationError


def test_pick_dtype_defaults():
    assert pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype(torch.device("cuda")) == torch.float16
    assert pick_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype"):
        pick_dtype(torch.device("cpu"), "float8")


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device() == torch.device("cpu") or torch.backends.mps.is_available()
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")


@pytest.mark.parametrize("device", ["tpu", "xla", "cuda:x", "", 0, 1.5, ["cpu"], "cpu:1", "mps:3", "cuda:99"])
def test_a_device_this_library_cannot_use_is_one_line_listing_the_choices(device):
    with pytest.raises(
        ConfigurationError,
        match=r"device .*(cuda, cuda:N, mps or cpu|does not exist|not available|no CUDA).* \(?this machine has: .*cpu",
    ) as refusal:
        pick_device(device)
    assert "\n" not in str(refusal.value)


def test_device_names_are_forgiving_about_case_and_spaces():
    assert pick_device(" CPU ") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    assert available_devices()[-1] == "cpu"


@pytest.mark.parametrize("dtype", [16, "int8", torch.int8, torch.bool, True])
def test_a_dtype_that_is_no_floating_point_type_is_refused(dtype):
    with pytest.raises(ConfigurationError, match="Unknown dtype .* use one of bf16, bfloat16, float16"):
        pick_dtype(torch.device("cpu"), dtype)
