"""``nbhelpers bench``: latency, throughput, memory and FLOPs of the models (:mod:`nbhelpers.perf.benchmark`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nbhelpers.arguments import settings_from_args
from nbhelpers.cli import COMMANDS
from nbhelpers.cli.common import add_dataclass_command
from nbhelpers.errors import ensure_writable_folder
from nbhelpers.perf.bench_settings import BenchSettings


def _run_bench(args: argparse.Namespace) -> int:
    # Lazy: the harness loads torch and diffusers, needed when the command runs, not for its --help.
    from nbhelpers.perf.benchmark import run_benchmark, save_report

    settings = settings_from_args(BenchSettings, args)
    settings.validate()
    ensure_writable_folder(Path(settings.out).parent)
    report = run_benchmark(settings)
    print(f"Weights: {report['weights']}. Saved {save_report(report, settings.out)}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nbhelpers bench``: one flag per :class:`BenchSettings` field."""
    add_dataclass_command(
        subparsers,
        "bench",
        BenchSettings,
        _run_bench,
        help=COMMANDS["bench"].help,
    )
