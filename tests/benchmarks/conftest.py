"""The benchmark scripts are files, not a package: tests load them by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as module ``name`` (once per session)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def gpu_suite() -> ModuleType:
    return load_script("gpu_suite")


@pytest.fixture(scope="session")
def gpu_wheels() -> ModuleType:
    return load_script("gpu_wheels")


@pytest.fixture(scope="session")
def gpu_table() -> ModuleType:
    return load_script("gpu_table")
