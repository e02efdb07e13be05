"""``nbhelpers evaluate``: a quality grid (models x schedulers x steps x fast paths over prompts x seeds), resumable.

Writes every picture, ``scores.csv`` (one line per picture) and ``summary.json`` (mean and 95% bootstrap interval
per setting); see :mod:`nbhelpers.quality.grid` and ``docs/quality.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nbhelpers.arguments import add_stand_in_flags
from nbhelpers.cli import COMMANDS
from nbhelpers.stand_in import resolve_stand_in


def _summary_line(entry: dict, clip_meaningless: bool) -> str:
    """One setting's means and intervals, e.g. ``sd-v1-5 default 30 steps none: clip_score 31.2 [30.1, 32.3] ...``."""
    parts = [f"{entry['model']} {entry['scheduler']} {entry['steps']} steps {entry['fast_path']}:"]
    for value in ("clip_score", "toy_accuracy", "seconds_per_image"):
        found = entry.get(value)
        if found:
            interval = f" [{found['low']:.2f}, {found['high']:.2f}]" if found["low"] is not None else ""
            note = " (meaningless)" if value == "clip_score" and clip_meaningless else ""
            parts.append(f"{value} {found['mean']:.2f}{interval}{note}")
    return " ".join(parts) + f" (n={entry['pictures']})"


def _run_evaluate(args: argparse.Namespace) -> int:
    # Lazy: the grid imports torch and diffusers, which `nbhelpers --help` must not wait for.
    from nbhelpers.quality.grid import GridSettings, run_grid

    stand_in = resolve_stand_in(args.stand_in)
    prompt_set = args.prompt_set
    if prompt_set is None and args.prompts_file is None:
        prompt_set = "toy-shapes" if stand_in is not None else "parti"
    settings = GridSettings(
        out=Path(args.out),
        models=args.models,
        steps=args.steps or (),
        schedulers=args.schedulers,
        fast_paths=args.fast_paths,
        prompt_set=prompt_set,
        prompts_file=Path(args.prompts_file) if args.prompts_file else None,
        limit=args.limit,
        seeds=args.seeds,
        stand_in=stand_in,
        clip_backbone=args.clip_backbone,
        device=args.device,
    )
    report = run_grid(settings, progress=not args.quiet)
    for entry in report.settings:
        print(_summary_line(entry, report.clip_meaningless))
    print(
        f"{report.made} picture(s) made, {report.skipped} already done, {report.failed} failed; "
        f"scores ({report.label}) in {report.scores}, summary in {report.summary}."
    )
    if report.failed:
        print("Failed rows have their reason in the 'error' column; run again to retry them.")
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nbhelpers evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help=COMMANDS["evaluate"].help,
        description="Make one picture per prompt and seed for every setting of the grid, score each (CLIP score; "
        "with --stand-in toy also the toy reader's accuracy), and write scores.csv and summary.json (mean and 95%% "
        "bootstrap interval per setting). A second run resumes.",
    )
    parser.add_argument("--models", nargs="+", default=["deci-v1"], help="Catalog names, hub ids or folders.")
    parser.add_argument(
        "--steps", nargs="+", type=int, default=None, help="Steps to try (default: each model's or fast path's)."
    )
    parser.add_argument("--schedulers", nargs="+", default=["default"], help="Scheduler names; default: the model's.")
    parser.add_argument(
        "--fast-paths",
        "--fast_paths",
        nargs="+",
        default=["none"],
        help="Few-step fast paths to compare (lcm-lora, hyper-sd-cfg, tcd-lora; SD v1.x only); none: the plain "
        "pipeline. Without --steps a fast path runs its authors' steps.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--prompt-set",
        "--prompt_set",
        default=None,
        help="A shipped prompt set: parti, diffusers-eval, toy-shapes (default: toy-shapes with a stand-in, "
        "else parti).",
    )
    source.add_argument("--prompts-file", "--prompts_file", default=None, help="A text, CSV or JSONL prompts file.")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N prompts.")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="One picture per prompt and seed.")
    parser.add_argument(
        "--clip-backbone",
        "--clip_backbone",
        default=None,
        help="CLIP hub id or folder (default: openai/clip-vit-large-patch14; the tiny random CLIP with a stand-in).",
    )
    add_stand_in_flags(parser)
    parser.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: best available).")
    parser.add_argument("--out", default="evaluation", help="Output folder (default ./evaluation).")
    parser.add_argument("--quiet", action="store_true", help="No progress bar.")
    parser.set_defaults(handler=_run_evaluate)
