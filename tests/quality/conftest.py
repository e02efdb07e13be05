"""Shared fixtures: the tiny random CLIP scorer on CPU and pictures with their prompts."""

from __future__ import annotations

import pytest

from nbhelpers.toy.shapes import make_scenes


@pytest.fixture(scope="session")
def tiny_scorer():
    """A :class:`ClipScorer` on the tiny random CLIP (shared; do not change its settings in a test)."""
    from nbhelpers.quality.clip_score import ClipScorer

    return ClipScorer(stand_in="tiny", device="cpu", batch_size=3)


@pytest.fixture(scope="session")
def pictures_and_prompts():
    """Eight toy scenes (64 px PIL pictures) and their captions."""
    scenes = make_scenes(8, seed=3)
    return [scene.render()[0] for scene in scenes], [scene.caption for scene in scenes]
