"""``nbhelpers generate``: images from text prompts, saved as PNG with their settings in the metadata.

With ``--prompts-file`` it runs a resumable job over the file's rows (:mod:`nbhelpers.jobs`): one picture per
row, a ``manifest.csv``, and under ``accelerate launch`` / ``torchrun`` each process takes its share.
"""

from __future__ import annotations

import argparse
import time

from nbhelpers.arguments import add_stand_in_flags
from nbhelpers.catalog import find_spec
from nbhelpers.cli import COMMANDS
from nbhelpers.errors import ConfigurationError, ensure_writable_folder
from nbhelpers.jobs import JobSpec, PipelineRecipe, read_rows, run_job
from nbhelpers.jobs.rows import normalise_settings


def _run_prompts_file(args: argparse.Namespace) -> int:
    """A job over the rows of ``--prompts-file``: resumable, one process or its share of several."""

    if args.prompt:
        raise ConfigurationError("Give prompts on the command line or --prompts-file, not both.")
    if args.num_images != 1:
        raise ConfigurationError(
            "--num-images is for prompts on the command line; with --prompts-file each row makes one picture "
            "(repeat a row with another seed for more)."
        )
    rows = read_rows(args.prompts_file)
    flags = {
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "height": args.height,
        "width": args.width,
        "negative_prompt": args.negative_prompt,
    }
    settings = normalise_settings(flags)  # ValueError naming the flag's setting and range: exit 2
    out = ensure_writable_folder(args.out)
    recipe = PipelineRecipe.make(
        args.model, stand_in=args.stand_in, scheduler=args.scheduler, safety_checker=not args.no_safety_checker
    )
    job = JobSpec(out=out, identity=recipe.identity(), settings=settings, seed=args.seed)
    start = time.perf_counter()
    report = run_job(rows, job, recipe, device=args.device, progress=not args.quiet)
    if report.manifest is None:  # not the main process of several: the main one reports
        return 1 if report.failed else 0
    print(f"{report} ({time.perf_counter() - start:.1f} s).")
    if report.failed_total:
        print(f"{report.failed_total} row(s) failed (the 'error' column says why); run again to retry them.")
        return 1
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    if args.prompts_file is not None:
        return _run_prompts_file(args)
    if not args.prompt:
        raise ConfigurationError("Give one or more prompts, or --prompts-file FILE.")
    # Lazy: generation and loading import torch and diffusers, which `nbhelpers --help` must not wait for.
    from nbhelpers.generation import catalog_size_multiple, check_prompts, generate, validate_settings
    from nbhelpers.loading import load_pipeline  # (lazy, see above)

    out = ensure_writable_folder(args.out)
    check_prompts("prompt", args.prompt)
    validate_settings(
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        height=args.height,
        width=args.width,
        num_images=args.num_images,
        seed=args.seed,
        num_prompts=len(args.prompt),
        multiple=catalog_size_multiple(args.model) if find_spec(args.model) else 8,  # generate() checks the rest
    )
    pipe = load_pipeline(
        args.model,
        stand_in=args.stand_in,
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
    """Register ``nbhelpers generate``."""
    gen = subparsers.add_parser(
        "generate",
        help=COMMANDS["generate"].help,
        description="Generate images from prompts given here, or from a prompts file (resumable; under "
        "`accelerate launch` or `torchrun` each process takes its share).",
    )
    gen.add_argument("prompt", nargs="*", help="One or more prompts (quote each).")
    gen.add_argument(
        "--prompts-file",
        "--prompts_file",
        default=None,
        help="A text (one prompt per line), CSV or JSONL file with a 'prompt' column and optional 'seed' and "
        "settings (steps, guidance, height, width, negative_prompt) per row: one picture per row into --out, "
        "with manifest.csv; a second run resumes.",
    )
    gen.add_argument("--model", default="deci-v1", help="Catalog name, hub id or local folder (default deci-v1).")
    add_stand_in_flags(gen)
    gen.add_argument("--out", default="outputs", help="Output folder (default ./outputs).")
    gen.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Seed of each prompt's first image: image j of each prompt uses seed+j; with --prompts-file, row i "
        "without a seed of its own uses seed+i.",
    )
    gen.add_argument("--num-images", type=int, default=1, help="Images per prompt.")
    gen.add_argument("--steps", type=int, default=None, help="Denoising steps (default: the model's).")
    gen.add_argument("--guidance", type=float, default=None, help="Guidance scale (default: the model's).")
    gen.add_argument("--negative-prompt", default=None, help="What the image should not show.")
    sides = "multiple of 8, of 64 for DeciDiffusion; given alone, the other side is the model's default"
    gen.add_argument("--height", type=int, default=None, help=f"Image height in pixels ({sides}).")
    gen.add_argument("--width", type=int, default=None, help=f"Image width in pixels ({sides}).")
    gen.add_argument("--scheduler", default=None, help="Swap the scheduler: ddim, pndm, euler, euler-a, dpm++, ...")
    gen.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: best available).")
    gen.add_argument("--no-safety-checker", action="store_true", help="Turn the NSFW safety checker off.")
    gen.add_argument("--quiet", action="store_true", help="No progress bar.")
    gen.set_defaults(handler=_run_generate)
