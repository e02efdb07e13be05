"""The ``nbhelpers`` command line: ``nbhelpers generate``, ``nbhelpers env`` and the other jobs.

One module per command (``nbhelpers/cli/<command>.py``), each with ``add_parser(subparsers)``; the command line
imports the features, never the reverse. A command whose optional extra is not installed (``serve`` needs
``[serving]``, ``dreambooth`` needs ``[training]``, ``evaluate`` needs ``[quality]``) is still listed and says which
extra to install; any other import error fails loudly instead of hiding the command.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from nbhelpers.arguments import run_handler


@dataclass(frozen=True)
class Command:
    """A sub-command: the module that registers it and the optional extra it needs (``None``: the core)."""

    module: str
    extra: str | None = None


#: Every sub-command, in the order ``nbhelpers --help`` lists them.
COMMANDS: dict[str, Command] = {
    "env": Command("nbhelpers.cli.env"),
    "generate": Command("nbhelpers.cli.generate"),
    "evaluate": Command("nbhelpers.cli.evaluate", extra="quality"),
    "bench": Command("nbhelpers.cli.bench"),
    "serve": Command("nbhelpers.cli.serve", extra="serving"),
    "dreambooth": Command("nbhelpers.cli.dreambooth", extra="training"),
    "toy-train": Command("nbhelpers.cli.toy_train"),
}

#: The top-level modules each optional extra provides (a test checks them against pyproject.toml).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "serving": ("azureml_inference_server_http", "gunicorn", "h11", "requests", "urllib3", "pandas"),
    "training": ("peft",),
    "quality": ("torchmetrics",),
}


def missing_modules(extra: str | None) -> list[str]:
    """The modules of ``extra`` that are not installed (none for the core)."""
    return [name for name in EXTRA_MODULES.get(extra or "", ()) if importlib.util.find_spec(name) is None]


def _add_missing_extra(subparsers: argparse._SubParsersAction, name: str, extra: str, missing: list[str]) -> None:
    """Register ``name`` as a command that only says which extra to install."""
    message = (
        f"needs the [{extra}] extra (missing: {', '.join(missing)}): "
        f"pip install 'diffusion-nbhelpers[{extra}]' (or pip install -e '.[{extra}]' in a checkout)."
    )
    # No option prefix: whatever flags follow are taken as plain words and ignored, so the message is what shows.
    parser = subparsers.add_parser(name, help=f"(not installed) {message}", add_help=False, prefix_chars="\0")
    parser.add_argument("rest", nargs="*")
    parser.set_defaults(handler=lambda _args: _refuse(name, message))


def _refuse(name: str, message: str) -> int:
    print(f"nbhelpers {name}: {message}", file=sys.stderr)
    return 2


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser with every sub-command (or only ``commands``)."""
    parser = argparse.ArgumentParser(
        prog="nbhelpers", description="Text-to-image helpers for the DeciDiffusion / Stable Diffusion tutorials."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands or COMMANDS:
        command = COMMANDS[name]
        missing = missing_modules(command.extra)
        if missing and command.extra is not None:
            _add_missing_extra(subparsers, name, command.extra, missing)
            continue
        importlib.import_module(command.module).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, *, commands: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbhelpers`` command; returns the exit status."""
    args = build_parser(commands).parse_args(argv)
    return run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
