"""Training state files (safetensors + JSON): what goes in comes back, nothing in them runs, damage is named."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from nbhelpers.training.conventions import make_optimizer, mix_seed, process_seed
from nbhelpers.training.state import (
    UnreadableState,
    check_optimizer_state,
    check_same_keys,
    check_tensors,
    load_state_file,
    rng_states,
    save_state_file,
    set_rng_states,
)


def _stepped_optimizer() -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    parameters = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer = make_optimizer("adamw_torch", parameters, learning_rate=1e-3, weight_decay=1e-2, fused=False)
    sum(p.sum() for p in parameters).backward()
    optimizer.step()
    return optimizer, parameters


def test_an_optimizer_and_schedule_come_back_as_they_were(tmp_path):
    optimizer, parameters = _stepped_optimizer()
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    optimizer.step()
    schedule.step()
    state = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "losses": [0.5, float("inf")]}
    path = save_state_file(tmp_path / "state.safetensors", state)
    loaded = load_state_file(path)

    assert loaded["losses"] == [0.5, float("inf")] and loaded["schedule"] == schedule.state_dict()
    assert isinstance(loaded["optimizer"]["param_groups"][0]["betas"], tuple)  # tuples stay tuples
    assert set(loaded["optimizer"]["state"]) == {0, 1}  # integer keys stay integers
    for index, values in optimizer.state_dict()["state"].items():
        for name, tensor in values.items():
            assert torch.equal(loaded["optimizer"]["state"][index][name], tensor)
    check_optimizer_state(loaded["optimizer"], optimizer)
    fresh = make_optimizer("adamw_torch", parameters, learning_rate=1e-3, weight_decay=1e-2, fused=False)
    fresh.load_state_dict(loaded["optimizer"])
    assert fresh.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]


def test_random_generators_are_restored():
    states = rng_states()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_states(states)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])
    with pytest.raises(UnreadableState, match="random generator states not accepted"):
        set_rng_states({**states, "torch": torch.zeros(3, dtype=torch.uint8)})


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"", "is not a safetensors file"),
        (b"\x80\x04\x95garbage", "is not a safetensors file"),
        (None, "is missing"),
    ],
)
def test_damaged_files_are_named(tmp_path, content, named):
    path = tmp_path / "state.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UnreadableState, match=f"state.safetensors {named}"):
        load_state_file(path)


def test_a_plain_safetensors_file_or_a_truncated_state_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "weights.safetensors")
    with pytest.raises(UnreadableState, match="not a training state of this format"):
        load_state_file(tmp_path / "weights.safetensors")
    data = save_state_file(tmp_path / "s.safetensors", {"t": torch.ones(1000)}).read_bytes()
    (tmp_path / "s.safetensors").write_bytes(data[:-100])
    with pytest.raises(UnreadableState, match="not a safetensors file"):
        load_state_file(tmp_path / "s.safetensors")


def test_values_that_json_cannot_hold_are_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match="holds a object"):
        save_state_file(tmp_path / "s.safetensors", {"x": object()})
    assert not (tmp_path / "s.safetensors").exists()


def test_checks_name_what_does_not_fit():
    optimizer, parameters = _stepped_optimizer()
    saved = optimizer.state_dict()
    wrong_moment = {**saved, "state": {0: {**saved["state"][0], "exp_avg": torch.zeros(5)}, 1: saved["state"][1]}}
    with pytest.raises(UnreadableState, match="exp_avg of parameter 0 is not shaped like the parameter"):
        check_optimizer_state(wrong_moment, optimizer)
    with pytest.raises(UnreadableState, match="for other parameters"):
        check_optimizer_state({**saved, "param_groups": [{**saved["param_groups"][0], "params": [0]}]}, optimizer)
    with pytest.raises(UnreadableState, match="not an optimizer's state"):
        check_optimizer_state([], optimizer)
    with pytest.raises(UnreadableState, match="weights: w is \\(2,\\), the run's is \\(3,\\)"):
        check_tensors({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, "weights")
    with pytest.raises(UnreadableState, match="schedule is not this run's kind"):
        check_same_keys({"optimizer": "x"}, {"last_epoch": 0}, "schedule")


def test_seeds_mix_one_way():
    assert mix_seed(7) == 7 and mix_seed(7, 3) == 7 * 1_000_003 + 3
    assert mix_seed(0, 1) == 1 and mix_seed(2, 3, 4) == (2 * 1_000_003 + 3) * 1_000_003 + 4
    assert process_seed(5, 0) == 5 * 1024 and process_seed(5, 1) == 5 * 1024 + 1
    with pytest.raises(ValueError, match="process_index"):
        process_seed(5, 1024)
