"""``nbhelpers serve``: the online endpoint contract served locally (:mod:`nbhelpers.endpoints.serving`).

The parser is serving's own (:func:`~nbhelpers.endpoints.serving.build_serve_parser`), which ``python -m
nbhelpers.endpoints.serving`` uses too.
"""

from __future__ import annotations

import argparse
import functools

from nbhelpers.cli import COMMANDS
from nbhelpers.endpoints.serving import build_serve_parser


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nbhelpers serve`` (its flags come from the settings dataclasses' fields)."""
    build_serve_parser(functools.partial(subparsers.add_parser, "serve", help=COMMANDS["serve"].help))
