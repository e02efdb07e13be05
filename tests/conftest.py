"""Shared tiny pipelines, and the unit tests' stand-in (the rest of the environment is set in the root conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def unit_tests_use_the_tiny_stand_in(monkeypatch):
    """A call that names no stand-in gets the tiny random-weight one (the notebooks get the toy one): unit tests
    check code paths, fast. Subprocesses a test starts inherit it."""
    monkeypatch.setenv("NBHELPERS_STAND_IN", "tiny")


@pytest.fixture(scope="session")
def tiny_sd():
    """The tiny SD v1.5 stand-in pipeline on CPU (shared; do not modify it in a test)."""
    from nbhelpers.loading import load_pipeline

    return load_pipeline("sd-v1-5", stand_in="tiny", device="cpu", progress=False)


@pytest.fixture(scope="session")
def tiny_deci():
    """The tiny DeciDiffusion stand-in pipeline on CPU (shared; do not modify it in a test)."""
    from nbhelpers.loading import load_pipeline

    return load_pipeline("deci-v1", stand_in="tiny", device="cpu", progress=False)
