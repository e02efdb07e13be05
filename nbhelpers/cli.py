"""The ``nbhelpers`` command line: ``nbhelpers generate``, ``nbhelpers env`` and the other jobs.

Each job lives in its own module and registers a sub-command through an ``add_parser(subparsers)``
function listed in :data:`COMMAND_MODULES`; modules whose optional dependencies are missing are skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

SettingsT = TypeVar("SettingsT")

#: Modules that add sub-commands; each defines ``add_parser(subparsers) -> None``.
COMMAND_MODULES: tuple[str, ...] = (
    "nbhelpers.cli",
    "nbhelpers.perf.benchmark",
    "nbhelpers.endpoints.serving",
    "nbhelpers.dreambooth.trainer",
    "nbhelpers.toy.train",
)


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def add_dataclass_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    settings_classes: type | tuple[type, ...],
    handler: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str | None = None,
    **parser_kwargs: Any,
) -> argparse.ArgumentParser:
    """Register sub-command ``name`` with one flag per field of the dataclass(es) ``settings_classes``.

    ``transformers.HfArgumentParser`` writes the flags: names equal field names, as in diffusers' training
    scripts (``--batch_sizes``; ``--batch-sizes`` is accepted too), types, choices and defaults come from the
    field, and ``--help`` shows each field's ``metadata["help"]``, so all of it is written once, in the
    dataclass. Turn the parsed arguments back into settings with :func:`settings_from_args`. Returns the
    sub-command's parser, for extra arguments (``parser_kwargs`` go to ``add_parser``, e.g. ``allow_abbrev``).
    """
    from transformers import HfArgumentParser

    classes = settings_classes if isinstance(settings_classes, tuple) else (settings_classes,)
    fields = HfArgumentParser(classes, add_help=False)
    command = subparsers.add_parser(
        name,
        parents=[fields],
        help=help,
        description=description or help,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        **parser_kwargs,
    )
    command.set_defaults(handler=handler)
    return command


def settings_from_args(settings_cls: type[SettingsT], args: argparse.Namespace) -> SettingsT:
    """The ``settings_cls`` instance described by arguments parsed for :func:`add_dataclass_command`."""
    values: dict[str, Any] = {f.name: getattr(args, f.name) for f in dataclasses.fields(settings_cls) if f.init}
    return settings_cls(**values)


def ensure_writable_folder(folder: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Create ``folder`` if needed and check a file can be written there.

    Args:
        folder: the folder results will be written to.
        flag: the option the message tells the user to change.

    Raises:
        CommandError: naming the folder and the reason, before any work is done.
    """
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise CommandError(
            f"Cannot write to output folder {path}: {err.strerror or err}. Choose another folder with {flag}."
        ) from err
    return path


def _run_env(args: argparse.Namespace) -> int:
    from nbhelpers.environment import environment_report

    report = environment_report()
    print(json.dumps(report.as_dict(), indent=2) if args.json else report)
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    from nbhelpers.generation import generate, validate_settings
    from nbhelpers.loading import load_pipeline

    out = ensure_writable_folder(args.out)
    validate_settings(
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        height=args.height,
        width=args.width,
        num_images=args.num_images,
    )
    pipe = load_pipeline(
        args.model,
        tiny=True if args.tiny else None,
        toy=True if args.toy else None,
        device=args.device,
        safety_checker=not args.no_safety_checker,
        scheduler=args.scheduler,
        progress=not args.quiet,
    )
    result = generate(
        pipe,
        args.prompt,
        seed=args.seed,
        num_images=args.num_images,
        negative_prompt=args.negative_prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        height=args.height,
        width=args.width,
    )
    paths = result.save(out)
    for path, note in zip(paths, result.diagnosis(), strict=True):
        print(f"{path}" + ("" if note == "ok" else f"  ({note})"))
    per_image = result.seconds / len(paths)
    print(
        f"Wrote {len(paths)} image(s) to {out} with {result.model} in {result.seconds:.2f} s "
        f"({per_image:.2f} s per image, device {pipe.nbhelpers_info.device})."
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``env`` and ``generate``."""
    env = subparsers.add_parser("env", help="Report GPU, CUDA, platform and library versions.")
    env.add_argument("--json", action="store_true", help="Print the report as JSON.")
    env.set_defaults(handler=_run_env)

    gen = subparsers.add_parser("generate", help="Generate images from text prompts and save them as PNG.")
    gen.add_argument("prompt", nargs="+", help="One or more prompts (quote each).")
    gen.add_argument("--model", default="deci-v1", help="Catalog name, hub id or local folder (default deci-v1).")
    stand_in = gen.add_mutually_exclusive_group()
    stand_in.add_argument("--tiny", action="store_true", help="Use the offline tiny model (random weights).")
    stand_in.add_argument(
        "--toy", action="store_true", help="Use the trained toy 'shapes' model (64 px, see `nbhelpers toy-train`)."
    )
    gen.add_argument("--out", default="outputs", help="Output folder (default ./outputs).")
    gen.add_argument("--seed", type=int, default=0, help="Seed of the first image; image i uses seed+i.")
    gen.add_argument("--num-images", type=int, default=1, help="Images per prompt.")
    gen.add_argument("--steps", type=int, default=None, help="Denoising steps (default: the model's).")
    gen.add_argument("--guidance", type=float, default=None, help="Guidance scale (default: the model's).")
    gen.add_argument("--negative-prompt", default=None, help="What the image should not show.")
    gen.add_argument("--height", type=int, default=None, help="Image height in pixels, multiple of 8.")
    gen.add_argument("--width", type=int, default=None, help="Image width in pixels, multiple of 8.")
    gen.add_argument("--scheduler", default=None, help="Swap the scheduler: ddim, pndm, euler, euler-a, dpm++, ...")
    gen.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available).")
    gen.add_argument("--no-safety-checker", action="store_true", help="Turn the NSFW safety checker off.")
    gen.add_argument("--quiet", action="store_true", help="No progress bar.")
    gen.set_defaults(handler=_run_generate)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="nbhelpers", description="Text-to-image helpers for the DeciDiffusion / Stable Diffusion tutorials."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # an optional extra is not installed: its command is simply absent
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbhelpers`` command; returns the exit status."""
    from nbhelpers.catalog import UnknownModelError
    from nbhelpers.loading import ModelLoadError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (CommandError, UnknownModelError, ModelLoadError, ValueError) as err:
        print(f"nbhelpers {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
