"""What the ``nbhelpers`` commands share besides :mod:`nbhelpers.arguments`: a sub-command made from settings
dataclasses."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from nbhelpers.arguments import dataclass_flags


def add_dataclass_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    settings_classes: type | tuple[type, ...],
    handler: Callable[[argparse.Namespace], int],
    *,
    help: str,  # noqa: A002 - argparse's own name
    description: str | None = None,
    resumable: bool = False,
    **parser_kwargs: Any,
) -> argparse.ArgumentParser:
    """Register sub-command ``name`` with one flag per field of the dataclass(es) ``settings_classes``
    (:func:`nbhelpers.arguments.dataclass_flags`; a ``stand_in`` field also gets ``--toy`` and ``--tiny``).

    Turn the parsed arguments back into settings with :func:`nbhelpers.arguments.settings_from_args`.
    ``resumable``: running the command again after Ctrl-C resumes its work (the interruption message says so).
    Returns the sub-command's parser, for extra arguments (``parser_kwargs`` go to ``add_parser``, e.g.
    ``allow_abbrev``).
    """
    command = subparsers.add_parser(
        name,
        parents=[dataclass_flags(settings_classes)],
        help=help,
        description=description or help,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        **parser_kwargs,
    )
    command.set_defaults(handler=handler, resumable=resumable)
    return command
