import pytest
import torch

from nbhelpers.device import pick_device, pick_dtype


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
