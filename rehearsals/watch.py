"""Records every weight file a Python process opens, for the real-size rehearsal.

Installed through ``sitecustomize`` (see :func:`write_sitecustomize`) into the notebook kernel and every Python
process it starts (notebook 04's server), before anything imports diffusers or transformers. Two hooks, because
safetensors opens files in Rust where Python's audit hooks do not see them:

- an audit hook on ``open`` (``torch.load``, pickled ``.bin`` files, anything opened from Python);
- a wrapper around ``safetensors.safe_open`` (what ``safetensors.torch.load_file``, diffusers and transformers use).

Each open appends one JSON line ``{"pid", "path", "via"}`` to ``$REHEARSAL_OPEN_LOG``.
"""

from __future__ import annotations

from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")

_SITECUSTOMIZE = """
import os

if os.environ.get("REHEARSAL_OPEN_LOG"):
    import json
    import sys

    _log_path = os.environ["REHEARSAL_OPEN_LOG"]
    _suffixes = {suffixes!r}

    def _record(path, via):
        path = os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else None
        if isinstance(path, str) and path.endswith(_suffixes):
            with open(_log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps({{"pid": os.getpid(), "path": os.path.abspath(path), "via": via}}) + "\\n")

    def _audit(event, args):
        if event != "open" or not args or str(args[0]).startswith(_log_path):
            return
        mode, flags = (args + (None, None))[1:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
        if not writing:
            _record(args[0], "open")

    sys.addaudithook(_audit)
    try:
        import safetensors
        import safetensors.torch

        _real_safe_open = safetensors.safe_open

        def safe_open(filename, *args, **kwargs):
            _record(filename, "safetensors")
            return _real_safe_open(filename, *args, **kwargs)

        safetensors.safe_open = safe_open
        safetensors.torch.safe_open = safe_open
    except ImportError:
        pass
"""


def write_sitecustomize(folder: Path) -> Path:
    """Write ``sitecustomize.py`` into ``folder`` (put ``folder`` first on ``PYTHONPATH``); returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sitecustomize.py"
    path.write_text(_SITECUSTOMIZE.format(suffixes=WEIGHT_SUFFIXES), encoding="utf-8")
    return path
