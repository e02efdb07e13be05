"""One way to retire a name: :func:`deprecate` warns with what goes, in which version, and what to use instead.

Modelled on diffusers' ``deprecate``: once the package version reaches ``removed_in`` the call itself fails, so a
deprecation cannot outlive its announced removal unnoticed (the test suite runs every call site).
"""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, version

from packaging.version import Version


def _package_version() -> str:
    try:
        return version("diffusion-nbhelpers")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


def deprecate(name: str, removed_in: str, instead: str, *, stacklevel: int = 3) -> None:
    """Warn (``FutureWarning``) that ``name`` goes in version ``removed_in``; say what to use ``instead``.

    Raises:
        RuntimeError: once the installed version is ``removed_in`` or later: the deprecated code must be deleted.
    """
    current = _package_version()
    if Version(current) >= Version(removed_in):
        raise RuntimeError(
            f"{name} was to be removed in nbhelpers {removed_in} and this is {current}: delete it and its callers."
        )
    warnings.warn(
        f"{name} is deprecated and will be removed in nbhelpers {removed_in}; {instead}",
        FutureWarning,
        stacklevel=stacklevel,
    )
