"""``nbhelpers env``: the GPU, CUDA, platform and library versions, and which stand-in is in effect."""

from __future__ import annotations

import argparse
import json

from nbhelpers.arguments import add_stand_in_flags
from nbhelpers.cli import COMMANDS
from nbhelpers.stand_in import STAND_IN_VARIABLE, resolve_stand_in


def _run_env(args: argparse.Namespace) -> int:
    # Lazy: environment imports torch, which `nbhelpers --help` must not wait for.
    from nbhelpers.environment import environment_report

    report = environment_report()
    stand_in = resolve_stand_in(args.stand_in)
    source = "--stand-in" if args.stand_in is not None else STAND_IN_VARIABLE
    if args.json:
        print(json.dumps({**report.as_dict(), "stand_in": stand_in}, indent=2))
    else:
        print(report)
        print(f"Stand-in: {stand_in} (from {source})" if stand_in else "Stand-in: none (the real models)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nbhelpers env``."""
    env = subparsers.add_parser("env", help=COMMANDS["env"].help)
    env.add_argument("--json", action="store_true", help="Print the report as JSON.")
    add_stand_in_flags(env)
    env.set_defaults(handler=_run_env)
