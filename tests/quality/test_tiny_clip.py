"""The tiny random CLIP is built deterministically, once, without touching the caller's random state."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from nbhelpers.quality.tiny_clip import build_tiny_clip, tiny_clip_path


def test_builds_after_different_seeds_have_the_same_weights_and_leave_the_random_state_alone(tmp_path):
    torch.manual_seed(1)
    first = load_file(build_tiny_clip(tmp_path / "a") / "model.safetensors")
    torch.manual_seed(2)
    state = torch.random.get_rng_state()
    second = load_file(build_tiny_clip(tmp_path / "b") / "model.safetensors")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_the_cached_folder_is_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("NBHELPERS_CACHE", str(tmp_path))
    folder = tiny_clip_path()
    assert folder.parent == tmp_path / "tiny"
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert tiny_clip_path() == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == written
