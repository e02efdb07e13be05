"""Names a package exports but imports on first use (PEP 562), so importing the package stays light.

``nbhelpers`` (``import nbhelpers`` must not load torch) and ``nbhelpers.dreambooth`` (``nbhelpers dreambooth
--help`` needs only the config) use it::

    __getattr__, __dir__ = lazy_exports(__name__, {"load_pipeline": "nbhelpers.loading"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` for ``package``: each name of ``exports`` (name -> module
    that defines it) is imported when first used, then kept in the package like a normal attribute."""
    module = sys.modules[package]

    def __getattr__(name: str) -> Any:
        source = exports.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        setattr(module, name, value)  # later look-ups find it without coming here
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(exports))

    return __getattr__, __dir__
