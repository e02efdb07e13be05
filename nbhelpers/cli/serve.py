"""``nbhelpers serve``: the online endpoint contract served locally (:mod:`nbhelpers.endpoints.serving`).

``python -m nbhelpers.cli.serve ARGS`` is ``nbhelpers serve ARGS`` without the other commands' imports: the
gateway process stays free of torch (the model lives in the scoring worker it starts).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nbhelpers.cli.common import add_dataclass_command, run_handler, settings_from_args
from nbhelpers.endpoints.gateway import GatewayLimits
from nbhelpers.endpoints.serving import ServeArguments, serve
from nbhelpers.endpoints.settings import API_KEY_VARIABLE


def _run_serve(args: argparse.Namespace) -> int:
    return serve(settings_from_args(ServeArguments, args), settings_from_args(GatewayLimits, args))


class _RefuseKeyInArgv(argparse.Action):
    """``--api-key`` (the old flag): refused with the way to give a key instead."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(
            f"keys are not taken from the command line (every user sees it in `ps`); use --api_key_file "
            f"FILE or set {API_KEY_VARIABLE}."
        )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nbhelpers serve`` (its flags come from the settings dataclasses' fields)."""
    serve_parser = add_dataclass_command(
        subparsers,
        "serve",
        (ServeArguments, GatewayLimits),
        _run_serve,
        allow_abbrev=False,  # else --api-key would silently mean --api-key-file
        help="Serve the online endpoint contract locally, answering like an Azure ML managed endpoint.",
        description="The online scoring script (azmlinfsrv) behind a loopback gateway that answers like an Azure ML "
        "managed endpoint: 401, 408, 413, 424, 429 with Retry-After.",
    )
    serve_parser.add_argument(
        "--max-concurrency",
        dest="max_concurrent_requests_per_instance",
        type=int,
        default=argparse.SUPPRESS,
        help="Old spelling of --max_concurrent_requests_per_instance.",
    )
    serve_parser.add_argument("--api-key", "--api_key", action=_RefuseKeyInArgv, help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    """``nbhelpers serve ARGS`` importing only what serving needs."""
    parser = argparse.ArgumentParser(prog="nbhelpers")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run_handler(parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
