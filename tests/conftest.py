"""Shared tiny pipelines (the environment itself is set in the root conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_sd():
    """The tiny SD v1.5 stand-in pipeline on CPU (shared; do not modify it in a test)."""
    from nbhelpers.loading import load_pipeline

    return load_pipeline("sd-v1-5", tiny=True, device="cpu", progress=False)


@pytest.fixture(scope="session")
def tiny_deci():
    """The tiny DeciDiffusion stand-in pipeline on CPU (shared; do not modify it in a test)."""
    from nbhelpers.loading import load_pipeline

    return load_pipeline("deci-v1", tiny=True, device="cpu", progress=False)
