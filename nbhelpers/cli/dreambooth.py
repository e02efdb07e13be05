"""``nbhelpers dreambooth``: DreamBooth fine-tuning (:mod:`nbhelpers.dreambooth`); needs the ``[training]`` extra."""

from __future__ import annotations

import argparse

from nbhelpers.arguments import settings_from_args
from nbhelpers.cli import COMMANDS
from nbhelpers.cli.common import add_dataclass_command
from nbhelpers.dreambooth.config import DreamBoothConfig


def _run_dreambooth(args: argparse.Namespace) -> int:
    # Lazy: accelerate and the trainer are needed when the command runs, not for `nbhelpers --help`.
    from accelerate.state import PartialState

    from nbhelpers.dreambooth.trainer import train_dreambooth  # (lazy, see above)

    result = train_dreambooth(settings_from_args(DreamBoothConfig, args))
    if PartialState().is_main_process:
        kohya = f"; A1111/ComfyUI file {result.kohya_file}" if result.kohya_file else ""
        print(
            f"Trained to step {result.global_step} (resumed from {result.resumed_from}); "
            f"weights in {result.weights_dir}{kohya}"
        )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nbhelpers dreambooth``: one flag per :class:`DreamBoothConfig` field."""
    add_dataclass_command(
        subparsers,
        "dreambooth",
        DreamBoothConfig,
        _run_dreambooth,
        help=COMMANDS["dreambooth"].help,
        resumable=True,
        description="DreamBooth fine-tuning (LoRA by default). Flags are the fields of "
        "nbhelpers.dreambooth.DreamBoothConfig.",
    )
