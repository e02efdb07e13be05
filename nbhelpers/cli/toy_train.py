"""``nbhelpers toy-train``: train a toy "shapes" text-to-image model on the CPU (:mod:`nbhelpers.toy.train`)."""

from __future__ import annotations

import argparse

from nbhelpers.arguments import settings_from_args
from nbhelpers.cli import COMMANDS
from nbhelpers.cli.common import add_dataclass_command
from nbhelpers.toy.config import ToyTrainingConfig


def _run_toy_train(args: argparse.Namespace) -> int:
    # Lazy: the trainer loads torch, diffusers and transformers, needed when the command runs, not for its --help.
    from nbhelpers.toy.train import train_toy_model

    train_toy_model(settings_from_args(ToyTrainingConfig, args))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nbhelpers toy-train``: one flag per :class:`ToyTrainingConfig` field."""
    add_dataclass_command(
        subparsers,
        "toy-train",
        ToyTrainingConfig,
        _run_toy_train,
        help=COMMANDS["toy-train"].help,
        resumable=True,
    )
