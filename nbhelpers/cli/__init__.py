"""The ``nbhelpers`` command line: ``nbhelpers generate``, ``nbhelpers env`` and the other jobs.

One module per command (``nbhelpers/cli/<command>.py``), each with ``add_parser(subparsers)``; the command line
imports the features, never the reverse. A command whose optional extra is not installed (``serve`` needs
``[serving]``, ``dreambooth`` needs ``[training]``, ``evaluate`` needs ``[quality]``) is still listed and says which
extra to install; any other import error fails loudly instead of hiding the command.

Only the command being run is imported: ``nbhelpers --help`` lists every command from :data:`COMMANDS` without
importing one, so it answers at once instead of after loading torch and diffusers (several seconds).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from nbhelpers.arguments import run_handler


@dataclass(frozen=True)
class Command:
    """A sub-command: the module that registers it, its one-line help (the module registers it with this text) and
    the optional extra it needs (``None``: the core)."""

    module: str
    help: str
    extra: str | None = None


#: Every sub-command, in the order ``nbhelpers --help`` lists them.
COMMANDS: dict[str, Command] = {
    "env": Command("nbhelpers.cli.env", "Report GPU, CUDA, platform and library versions, and the stand-in."),
    "generate": Command("nbhelpers.cli.generate", "Generate images from text prompts and save them as PNG."),
    "evaluate": Command(
        "nbhelpers.cli.evaluate",
        "Quality grid: CLIP score (and seconds per picture) per model, scheduler, steps and fast path.",
        extra="quality",
    ),
    "bench": Command("nbhelpers.cli.bench", "Measure latency, throughput, memory and FLOPs of the models."),
    "serve": Command(
        "nbhelpers.cli.serve",
        "Serve the online endpoint contract locally, answering like an Azure ML managed endpoint.",
        extra="serving",
    ),
    "dreambooth": Command(
        "nbhelpers.cli.dreambooth", "Fine-tune SD on a few photos of a subject (LoRA or full).", extra="training"
    ),
    "toy-train": Command("nbhelpers.cli.toy_train", "Train a toy 'shapes' text-to-image model on the CPU."),
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


def build_parser(
    commands: Sequence[str] | None = None, *, load: Collection[str] | None = None
) -> argparse.ArgumentParser:
    """The argument parser with every sub-command (or only ``commands``).

    ``load``: the commands whose modules are imported to register their options (default: all); the others are
    listed with their help only, so a parser for one command imports only that command's features.
    """
    parser = argparse.ArgumentParser(
        prog="nbhelpers", description="Text-to-image helpers for the DeciDiffusion / Stable Diffusion tutorials."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands or COMMANDS:
        command = COMMANDS[name]
        missing = missing_modules(command.extra)
        if missing and command.extra is not None:
            _add_missing_extra(subparsers, name, command.extra, missing)
        elif load is None or name in load:
            importlib.import_module(command.module).add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=command.help)  # listed only: this run does not use it
    return parser


def main(argv: Sequence[str] | None = None, *, commands: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbhelpers`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The first word names the command (the top level has no options but --help): import only its module.
    chosen = [argv[0]] if argv and argv[0] in COMMANDS else []
    args = build_parser(commands, load=chosen).parse_args(argv)
    return run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
