"""Error types shared by the library and the command line, and the output-folder check every job makes first.

A :class:`UserFacingError`'s message says what went wrong and what to do, so the command line prints it in one
line without a traceback and exits with status 2. A :class:`ConfigurationError` is the common case: bad input the
user can fix (a setting, a flag, a file). Every error class of the library that a user can act on (a download that
failed, training that diverged) derives from one of the two.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class UserFacingError(Exception):
    """An error whose message says what to do about it; shown in one line, without a traceback."""


class ConfigurationError(UserFacingError, ValueError):
    """Bad input that the user can fix; the message says what to change."""


def ensure_writable_folder(folder: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Create ``folder`` if needed and check that a file can be written there, before any work is done.

    Args:
        folder: the folder results will be written to.
        flag: the option (or argument) the message tells the user to change.

    Raises:
        ConfigurationError: naming the folder and the reason.
    """
    if not str(folder).strip():
        raise ConfigurationError(f"{flag} is empty; give the folder to write to.")
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except ValueError as err:  # a NUL byte in the name
        raise ConfigurationError(
            f"Cannot write to output folder {str(path)!r}: {err}. Choose another folder with {flag}."
        ) from None
    except OSError as err:
        raise ConfigurationError(
            f"Cannot write to output folder {path}: {err.strerror or err}. Choose another folder with {flag}."
        ) from err
    return path
