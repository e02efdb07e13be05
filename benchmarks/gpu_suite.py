"""Every GPU figure of the project in one command, for a GPU machine lent for a few minutes, offline.

    python benchmarks/gpu_suite.py --out DIR              # on a CUDA machine: full-size models, random weights
    python benchmarks/gpu_suite.py --out DIR --dry-run    # the CPU rehearsal: tiny stand-ins, same code paths

It writes one JSON file per part into DIR and a ``summary.json`` (8 files at most, each well under 16 MB), and
rewrites the summary after every part, so a run stopped from outside still leaves what it measured. The parts, in
the order of what matters most:

1. ``bench``: SD v1.5 and DeciDiffusion at batch 1, the plain pipeline and the compiled fast path (first call
   recorded), with each stage's share and the UNet's achieved TFLOP/s against the GPU's measured dense fp16 peak
   (``nbhelpers.perf.benchmark``, the code of ``nbhelpers bench``);
2. ``dreambooth``: LoRA and full-UNet steps at 512 px under a T4's 15 GiB cap, peak memory next to the memory
   plan's estimate (``benchmarks/dreambooth_step.py``);
3. ``flexible_unet``: DeciDiffusion's flexible UNet in fp16 against fp32 on the same inputs over its 30-step DDIM
   schedule (relative error, NaN/inf);
4. ``daam``: DAAM tracing overhead at 512 px for both models (``benchmarks/daam_overhead.py``);
5. ``bench_more``: batch 8 and small-sd, as the time budget allows;
6. ``quality``: CLIP-score timing (``nbhelpers.quality``, a random-weight CLIP ViT-L/14);
7. ``few_step``: seconds per image of notebook 02's settings, few-step fast paths included
   (``nbhelpers.perf.few_step``).

A part that fails is recorded (error type, message, the end of its traceback, elapsed time) and the next one
runs; a part whose package or device is missing is recorded as skipped with the reason; a part that would start
after the time budget (``--budget-s``, 420 s by default) is skipped as such. Everything runs on random weights at
full size (the machine is offline; random weights cost what real ones cost), labelled so in every file.
``benchmarks/gpu_table.py`` renders the targets table from ``summary.json``; ``benchmarks/gpu_wheels.py`` builds
the wheels the machine lacks and prints the one command line to run there (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS.parent
for _folder in (REPO_ROOT, BENCHMARKS):  # nbhelpers and the sibling benchmark scripts, without an install
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
# Before anything imports huggingface_hub: the GPU machine has no network, and a hub lookup would wait for a
# connection timeout instead of failing at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from nbhelpers.atomic import write_json_atomic  # noqa: E402 - standard library only; the path is set just above

SUITE_VERSION = 1
SUMMARY = "summary.json"
#: what comes back from the GPU machine: at most 8 files (one per part plus the summary)
MAX_FILES = 8
DEFAULT_BUDGET_S = 420.0
#: a T4's usable memory (Colab reports 15 GiB): the DreamBooth part runs under this cap
T4_CAP_BYTES = 15 * 2**30
#: modules of this repository: a missing one is a bug to report, not a package to install
_OWN_MODULES = ("nbhelpers", "daam_overhead", "dreambooth_step", "gpu_suite")
LOG_LINES_KEPT = 400
RANDOM_WEIGHTS = "full-size architectures with RANDOM weights (timings and memory are real; pictures are not)"
DRY_RUN_WEIGHTS = "DRY RUN: tiny stand-in models with random weights on the CPU (no figure here is a real model's)"


class PartSkipped(Exception):
    """A part cannot run here (a package, the GPU or the time is missing); the message says which."""


@dataclass(frozen=True)
class Profile:
    """What one run measures: the GPU's full-size figures, or the CPU rehearsal of the same code paths."""

    dry_run: bool
    device: str
    size: int
    #: denoising steps of the bench parts (``None``: each model's own, 50 SD, 30 DeciDiffusion)
    steps: int | None
    warmup: int
    repeats: int
    #: the fast path compared with the plain pipeline
    fast_mode: str
    big_batch: int
    dreambooth_resolution: int
    dreambooth_repeats: int
    dreambooth_modes: tuple[str, ...]
    daam_steps: int
    daam_repeats: int
    flexible_steps: int
    #: seconds a bench variant needs, by mode: a variant that would end past the budget is not started
    variant_estimate_s: dict[str, float] = field(default_factory=dict)

    @property
    def weights(self) -> str:
        return DRY_RUN_WEIGHTS if self.dry_run else RANDOM_WEIGHTS


GPU_PROFILE = Profile(
    dry_run=False,
    device="cuda",
    size=512,
    steps=None,
    warmup=2,  # compiled modes need two: the first call compiles, the second captures the CUDA graphs
    repeats=3,
    fast_mode="compile",
    big_batch=8,
    dreambooth_resolution=512,
    dreambooth_repeats=5,
    dreambooth_modes=("lora", "full", "full-gc"),
    daam_steps=30,
    daam_repeats=3,
    flexible_steps=30,
    # H100 anchors: SD eager 2.5 s/image (x6 calls), compile about 60 s before the first image
    variant_estimate_s={"none": 25.0, "compile": 100.0},
)
DRY_RUN_PROFILE = Profile(
    dry_run=True,
    device="cpu",
    size=64,
    steps=2,
    warmup=1,
    repeats=1,
    fast_mode="fused",  # compiling on a 2-core CPU takes minutes; the suite's code path is the same
    big_batch=2,
    dreambooth_resolution=64,
    dreambooth_repeats=1,
    dreambooth_modes=("lora", "full"),
    daam_steps=2,
    daam_repeats=1,
    flexible_steps=30,
    variant_estimate_s={"none": 2.0, "fused": 2.0},
)


@dataclass
class Context:
    """What a part gets: the profile, the clock against the budget, the log and figures shared between parts."""

    profile: Profile
    budget_s: float
    started: float = field(default_factory=time.monotonic)
    log_lines: list[str] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)
    #: where the files go (``None``: nowhere, a part run on its own), the parts of the run and their records
    out: Path | None = None
    parts: tuple[Part, ...] = ()
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the record of the part running now
    current: dict[str, Any] | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def log(self, message: str) -> None:
        line = f"[{self.elapsed():7.1f} s] {message}"
        print(line, flush=True)
        self.log_lines.append(line)

    def save_partial(self, results: dict[str, Any]) -> None:
        """Write the running part's figures so far (status ``running``) and the summary: a run stopped from
        outside, or a part failing later, keeps them."""
        if self.current is None or self.out is None:
            return
        self.current.update(status="running", results=results)
        write_json_atomic(self.out / f"{self.current['part']}.json", self.current)
        write_summary(self, finished=False)

    def fits(self, estimate_s: float) -> bool:
        """Whether work of about ``estimate_s`` seconds would end inside the budget."""
        return self.remaining() >= estimate_s

    def over_budget_reason(self, estimate_s: float) -> str:
        return (
            f"time budget: about {estimate_s:.0f} s needed, {max(self.remaining(), 0):.0f} s of "
            f"{self.budget_s:.0f} s left"
        )


@dataclass(frozen=True)
class Part:
    name: str
    title: str
    run: Callable[[Context], dict[str, Any]]


# --- helpers shared by the parts ------------------------------------------------------------------------------


def _free_device_memory() -> None:
    """Give back what a finished model held, compiled code and its CUDA-graph memory pools included."""
    import torch

    torch.compiler.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _pipeline(name: str, profile: Profile) -> Any:
    """The model the part times: full size with random weights in fp16, or the tiny stand-in in the rehearsal."""
    if profile.dry_run:
        from nbhelpers.loading import load_pipeline

        pipe = load_pipeline(name, stand_in="tiny", device=profile.device, progress=False, safety_checker=False)
    else:
        import torch

        from nbhelpers.models.random_weights import build_random_pipeline

        pipe = build_random_pipeline(name, device=profile.device, dtype=torch.float16)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _peak_tflops(ctx: Context) -> float | None:
    """The GPU's dense fp16 matmul rate, measured once per run (``None`` off CUDA)."""
    if "peak_tflops" not in ctx.shared:
        peak = None
        if ctx.profile.device == "cuda":
            import torch

            from nbhelpers.perf.benchmark import measure_matmul_peak_tflops

            peak = measure_matmul_peak_tflops(torch.device("cuda"), torch.float16)
            ctx.log(f"dense fp16 matmul peak: {peak:.0f} TFLOP/s")
        ctx.shared["peak_tflops"] = peak
    return ctx.shared["peak_tflops"]


def _run_bench_variants(ctx: Context, variants: list[tuple[str, list[str], list[int]]]) -> dict[str, Any]:
    """``run_benchmark`` for each (model, modes, batch sizes) that fits the budget; the others are listed."""
    from nbhelpers.perf.benchmark import BenchSettings, run_benchmark

    profile = ctx.profile
    peak = _peak_tflops(ctx)
    runs: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    results = {"weights": profile.weights, "peak_tflops": peak, "runs": runs, "skipped_variants": skipped}
    for model, modes, batches in variants:
        estimate = sum(profile.variant_estimate_s.get(mode, 60.0) for mode in modes) * len(batches)
        if not ctx.fits(estimate):
            reason = ctx.over_budget_reason(estimate)
            skipped.append({"model": model, "optimize": modes, "batch_sizes": batches, "reason": reason})
            ctx.log(f"bench {model} {modes} batch {batches}: skipped ({reason})")
            continue
        settings = BenchSettings(
            models=[model],
            device=profile.device,
            steps=profile.steps,
            batch_sizes=batches,
            optimize=modes,
            height=profile.size,
            width=profile.size,
            warmup=profile.warmup,
            repeats=profile.repeats,
            peak_tflops=peak,
            weights="random",
            stand_in="tiny" if profile.dry_run else "none",
        )
        report = run_benchmark(settings, log=ctx.log)
        report.pop("environment", None)  # once, in the summary
        runs.append(report)
        ctx.save_partial(results)
        _free_device_memory()
    return results


# --- the parts ------------------------------------------------------------------------------------------------


def part_bench(ctx: Context) -> dict[str, Any]:
    """SD v1.5 and DeciDiffusion at batch 1: the plain pipeline, then the fast path on the same pipeline."""
    modes = ["none", ctx.profile.fast_mode]
    return _run_bench_variants(ctx, [(model, modes, [1]) for model in ("sd-v1-5", "deci-v1")])


def part_bench_more(ctx: Context) -> dict[str, Any]:
    """Batch 8 (throughput) and small-sd, plain first, compiled ones as long as the budget lasts."""
    fast, big = ctx.profile.fast_mode, ctx.profile.big_batch
    return _run_bench_variants(
        ctx,
        [
            ("sd-v1-5", ["none"], [big]),
            ("deci-v1", ["none"], [big]),
            ("small-sd-v0", ["none"], [1, big]),
            ("sd-v1-5", [fast], [big]),
            ("deci-v1", [fast], [big]),
            ("small-sd-v0", [fast], [1]),
        ],
    )


@contextlib.contextmanager
def _memory_cap(device: str, cap_bytes: int) -> Iterator[dict[str, Any]]:
    """Hold the process to ``cap_bytes`` of the GPU (``torch.cuda.set_per_process_memory_fraction``)."""
    import torch

    if device != "cuda":
        yield {"applied": False, "reason": "needs CUDA (the memory cap is the CUDA allocator's)"}
        return
    _free_device_memory()
    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(cap_bytes / total, 1.0)
    torch.cuda.set_per_process_memory_fraction(fraction)
    try:
        yield {
            "applied": True,
            "cap_bytes": cap_bytes,
            "fraction": fraction,
            "device_total_bytes": total,
            "reserved_before_bytes": torch.cuda.memory_reserved(),  # held by earlier parts, counted in the cap
        }
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


def part_dreambooth(ctx: Context) -> dict[str, Any]:
    """One DreamBooth step per mode under a T4's 15 GiB: time, peak memory, the memory plan's estimate."""
    import torch
    from dreambooth_step import measure_mode

    profile = ctx.profile
    results: list[dict[str, Any]] = []
    with _memory_cap(profile.device, T4_CAP_BYTES) as cap, tempfile.TemporaryDirectory() as work:
        for mode in profile.dreambooth_modes:
            try:
                figures = measure_mode(
                    mode,
                    tiny=profile.dry_run,
                    device=profile.device,
                    resolution=profile.dreambooth_resolution,
                    repeats=profile.dreambooth_repeats,
                    work=Path(work),
                )
                figures["fits_under_cap"] = cap["applied"] or None
                peak = figures["peak_memory_bytes"]
                memory = f", peak {peak / 2**30:.2f} GiB" if peak else ""
                ctx.log(f"dreambooth {mode}: {figures['step_median_s']:.3f} s/step{memory}")
            except torch.cuda.OutOfMemoryError as err:  # a finding under the cap, not a failure of the part
                figures = {"mode": mode, "fits_under_cap": False, "error": str(err).splitlines()[0]}
                ctx.log(f"dreambooth {mode}: out of memory under the cap")
            results.append(figures)
            ctx.save_partial({"weights": profile.weights, "memory_cap": cap, "modes": results})
            _free_device_memory()
    return {"weights": profile.weights, "memory_cap": cap, "modes": results}


def part_flexible_unet(ctx: Context) -> dict[str, Any]:
    """DeciDiffusion's flexible UNet in half precision against fp32, on the same inputs, over its DDIM schedule.

    At each of the schedule's steps both UNets get the fp32 trajectory's latents (guided: unconditional and
    conditional rows, guidance 7.5, rescale 0.7 as DeciDiffusion's pipeline does); the relative error of the
    guided prediction is recorded. A second trajectory runs on the half-precision UNet's own predictions, as the
    fp16 pipeline does, and is checked for NaN/inf at every step.
    """
    import torch
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    from nbhelpers.catalog import get_spec
    from nbhelpers.models.components import build_scheduler, build_unet
    from nbhelpers.models.deci_pipeline import DECI_DEFAULT_GUIDANCE_RESCALE, DECI_DEFAULT_GUIDANCE_SCALE

    profile = ctx.profile
    device = torch.device(profile.device)
    spec = get_spec("deci-v1")
    half = torch.float16
    torch.manual_seed(0)
    with torch.device(device):
        unet32 = build_unet(spec, tiny=profile.dry_run).eval()
    unet16 = copy.deepcopy(unet32).to(half)
    scheduler = build_scheduler(spec)
    scheduler.set_timesteps(profile.flexible_steps)
    own_scheduler = copy.deepcopy(scheduler)  # one per trajectory, whatever state a scheduler keeps between steps
    config = unet32.config
    latent = profile.size // 8
    generator = torch.Generator("cpu").manual_seed(0)
    start = torch.randn(1, config.in_channels, latent, latent, generator=generator) * scheduler.init_noise_sigma
    context = torch.randn(2, 77, config.cross_attention_dim, generator=generator).to(device)

    def guided(unet: torch.nn.Module, latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        dtype = next(unet.parameters()).dtype
        rows = scheduler.scale_model_input(torch.cat([latents, latents]), timestep)
        prediction = unet(rows.to(dtype), timestep.to(device), context.to(dtype), return_dict=False)[0].float()
        unconditional, conditional = prediction.chunk(2)
        combined = unconditional + DECI_DEFAULT_GUIDANCE_SCALE * (conditional - unconditional)
        return rescale_noise_cfg(combined, conditional, guidance_rescale=DECI_DEFAULT_GUIDANCE_RESCALE)

    # the fp32 reference means true fp32: no TF32 in convolutions (cuDNN's default) or matmuls
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    errors: list[float] = []
    first_non_finite: int | None = None
    largest = 0.0
    try:
        with torch.no_grad():
            reference, own = start.to(device), start.to(device)
            for index, timestep in enumerate(scheduler.timesteps):
                exact = guided(unet32, reference, timestep)
                same_input = guided(unet16, reference, timestep)
                errors.append(float((same_input - exact).norm() / exact.norm()))
                prediction = guided(unet16, own, timestep)
                if first_non_finite is None and not bool(torch.isfinite(prediction).all()):
                    first_non_finite = index
                largest = max(largest, float(prediction.abs().max()))
                reference = scheduler.step(exact, timestep, reference).prev_sample
                own = own_scheduler.step(prediction, timestep, own).prev_sample
            drift = float((own - reference).norm() / reference.norm())
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    ctx.log(
        f"flexible UNet {half} vs fp32: max relative error {max(errors):.2e}, "
        f"{'finite' if first_non_finite is None else f'NaN/inf from step {first_non_finite}'}"
    )
    return {
        "weights": profile.weights,
        "half_dtype": str(half).replace("torch.", ""),
        "scheduler": type(scheduler).__name__,
        "prediction_type": scheduler.config.prediction_type,
        "steps": len(errors),
        "size_px": profile.size,
        "relative_error_per_step": errors,
        "max_relative_error": max(errors),
        "median_relative_error": sorted(errors)[len(errors) // 2],
        "half_trajectory_finite": first_non_finite is None,
        "first_non_finite_step": first_non_finite,
        "max_abs_half_prediction": largest,
        "final_latents_relative_difference": drift,
    }


def part_daam(ctx: Context) -> dict[str, Any]:
    """Generation time plain and with DAAM tracing (heat maps computed), per model."""
    from daam_overhead import measure_overhead

    profile = ctx.profile
    results: list[dict[str, Any]] = []
    for name in ("sd-v1-5", "deci-v1"):
        pipe = _pipeline(name, profile)
        figures = measure_overhead(
            pipe,
            steps=profile.daam_steps,
            height=profile.size,
            width=profile.size,
            repeats=profile.daam_repeats,
            device=profile.device,
        )
        ctx.log(f"daam {name}: overhead x{figures['overhead_ratio']:.2f}")
        results.append({"model": name, "steps": profile.daam_steps, "size_px": profile.size, **figures})
        ctx.save_partial({"weights": profile.weights, "models": results})
        del pipe
        _free_device_memory()
    return {"weights": profile.weights, "models": results}


def _random_full_size_clip(folder: Path) -> Path:
    """CLIP ViT-L/14 (the default backbone's architecture, as in SD's safety checker) with random weights and the
    real preprocessing and tokenizer, saved where ``ClipScorer`` loads a local backbone: the GPU machine is offline."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from nbhelpers.models.configs import FEATURE_EXTRACTOR_CONFIG, SAFETY_CHECKER_CLIP_CONFIG
    from nbhelpers.models.tiny import cache_root
    from nbhelpers.models.tokenizer import load_clip_tokenizer

    CLIPModel(CLIPConfig(**SAFETY_CHECKER_CLIP_CONFIG)).save_pretrained(folder, safe_serialization=True)
    tokenizer = load_clip_tokenizer(cache_root() / "clip-tokenizer")
    CLIPProcessor(image_processor=CLIPImageProcessor(**FEATURE_EXTRACTOR_CONFIG), tokenizer=tokenizer).save_pretrained(
        folder
    )
    return folder


def part_quality(ctx: Context) -> dict[str, Any]:
    """Time of CLIP-scoring a batch of generated-size pictures (``nbhelpers.quality.ClipScorer``, torchmetrics)."""
    try:
        from nbhelpers.quality import ClipScorer
    except ImportError as err:
        raise PartSkipped(f"nbhelpers.quality not available ({err})") from None
    import torch

    from nbhelpers.perf.timing import measure

    profile = ctx.profile
    count = 4 if profile.dry_run else 64
    pictures = torch.randint(0, 256, (count, 3, profile.size, profile.size), dtype=torch.uint8)
    prompts = ["A big owl with bright shinning eyes"] * count
    with tempfile.TemporaryDirectory() as folder:
        if profile.dry_run:
            scorer, backbone = ClipScorer(stand_in="tiny", device=profile.device), "tiny stand-in CLIP"
        else:
            scorer = ClipScorer(_random_full_size_clip(Path(folder)), device=profile.device)
            backbone = "CLIP ViT-L/14 architecture with RANDOM weights (timing only; its scores mean nothing)"
        timing = measure(lambda: scorer.score(pictures, prompts), warmup=1, repeats=profile.repeats, device=None)
    ctx.log(f"quality: {timing.median_s / count * 1e3:.1f} ms per picture ({count} pictures)")
    return {
        "backbone": backbone,
        "pictures": count,
        "size_px": profile.size,
        "batch_size": scorer.batch_size,
        "median_s": timing.median_s,
        "seconds_per_picture": timing.median_s / count,
        "first_call_s": timing.first_call_s,
    }


def part_few_step(ctx: Context) -> dict[str, Any]:
    """Few-step fast paths (LCM-LoRA and the like) against the plain pipeline (``nbhelpers.perf.few_step``)."""
    try:
        from nbhelpers.perf.few_step import run_few_step_benchmark  # type: ignore[import-not-found]
    except ImportError as err:
        raise PartSkipped(f"nbhelpers.perf.few_step cannot be imported: {err}") from None
    profile = ctx.profile
    return run_few_step_benchmark(device=profile.device, dry_run=profile.dry_run, size=profile.size, log=ctx.log)


PARTS: tuple[Part, ...] = (
    Part("bench", "SD v1.5 and DeciDiffusion, batch 1: plain pipeline and fast path", part_bench),
    Part("dreambooth", "DreamBooth steps under a T4's 15 GiB cap", part_dreambooth),
    Part("flexible_unet", "Flexible UNet fp16 against fp32 over the 30-step DDIM schedule", part_flexible_unet),
    Part("daam", "DAAM tracing overhead", part_daam),
    Part("bench_more", "Batch 8 and small-sd", part_bench_more),
    Part("quality", "CLIP score timing", part_quality),
    Part("few_step", "Few-step fast paths", part_few_step),
)


# --- running and recording ------------------------------------------------------------------------------------


def _missing_package(err: ModuleNotFoundError) -> str | None:
    """The third-party package a failed import names (``None`` when it is one of this repository's modules)."""
    top = (err.name or "").split(".")[0]
    return None if not top or top in _OWN_MODULES else top


def _error_record(err: BaseException) -> dict[str, Any]:
    lines = traceback.format_exception(type(err), err, err.__traceback__)
    return {
        "type": type(err).__name__,
        "message": str(err)[:2000],
        "traceback": "".join(lines)[-4000:],  # the end: where it broke
    }


def run_part(part: Part, ctx: Context) -> dict[str, Any]:
    """Run one part and return its record: status ok/skipped/error, elapsed time, results or reason or error (a
    part that failed after saving figures keeps them)."""
    record: dict[str, Any] = {
        "part": part.name,
        "title": part.title,
        "dry_run": ctx.profile.dry_run,
        "device": ctx.profile.device,
        "started_at_s": round(ctx.elapsed(), 3),
    }
    ctx.records[part.name] = ctx.current = record
    start = time.monotonic()
    try:
        if ctx.remaining() <= 0:
            raise PartSkipped(f"time budget: {ctx.budget_s:.0f} s used up before the part started")
        if ctx.profile.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise PartSkipped("needs a CUDA GPU (none is visible); --dry-run rehearses the suite on the CPU")
        ctx.log(f"part {part.name}: {part.title}")
        record["results"] = part.run(ctx)
        record["status"] = "ok"
    except PartSkipped as skip:
        record.update(status="skipped", reason=str(skip))
    except ModuleNotFoundError as err:
        package = _missing_package(err)
        if package is None:
            record.update(status="error", error=_error_record(err))
        else:
            record.update(status="skipped", reason=f"needs the package {package!r}, not installed ({err})")
    except Exception as err:  # noqa: BLE001 - every failure is recorded and the next part runs
        record.update(status="error", error=_error_record(err))
    record["elapsed_s"] = round(time.monotonic() - start, 3)
    ctx.current = None
    verdict = record.get("reason") or (record["error"]["message"][:200] if "error" in record else "")
    ctx.log(f"part {part.name}: {record['status']} in {record['elapsed_s']:.1f} s {verdict}".rstrip())
    if record["status"] == "error":
        print(record["error"]["traceback"], file=sys.stderr, flush=True)
    return record


def _environment() -> dict[str, Any]:
    try:
        from nbhelpers.environment import environment_report

        return environment_report().as_dict()
    except Exception as err:  # noqa: BLE001 - the summary is written even where torch is broken
        return {"error": _error_record(err)}


def imported_distributions() -> dict[str, dict[str, str]]:
    """Distributions whose modules this process imported, with version and folder: what the wheel kit must carry,
    and (on the GPU machine) whether each came from the kit's folder or the machine's own packages."""
    from importlib import metadata

    owners = metadata.packages_distributions()
    found: dict[str, dict[str, str]] = {}
    for module in list(sys.modules):
        for name in owners.get(module.split(".")[0], []):
            with contextlib.suppress(metadata.PackageNotFoundError):
                distribution = metadata.distribution(name)
                found[name] = {"version": distribution.version, "location": str(distribution.locate_file(""))}
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def _measured(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A part's results, also those saved before it failed or was stopped (``None``: nothing measured)."""
    return (record or {}).get("results")


def _bench_rows(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    results = _measured(record)
    return [row for run in results["runs"] for row in run["results"]] if results else []


def headline_figures(records: dict[str, dict[str, Any]], fast_mode: str) -> dict[str, Any]:
    """The figures the targets table reads, taken from the parts' records (absent when not measured).

    Keys: ``seconds_per_image[model][plain|fast][batch]``, ``first_call_seconds[model][plain|fast]`` (batch 1),
    ``unet_share_of_peak[model][plain|fast][batch]``, ``stage_shares[model][plain|fast]`` (batch 1),
    ``dreambooth[mode]``, ``daam_overhead[model]``, ``flexible_unet``, ``peak_tflops``.
    """
    role = {"none": "plain", fast_mode: "fast"}
    figures: dict[str, Any] = {"fast_mode": fast_mode}
    for row in _bench_rows(records.get("bench")) + _bench_rows(records.get("bench_more")):
        if row["optimize"] not in role:
            continue
        model, path, batch = row["model"], role[row["optimize"]], str(row["batch_size"])
        figures.setdefault("seconds_per_image", {}).setdefault(model, {}).setdefault(path, {})[batch] = row[
            "seconds_per_image"
        ]
        if row["share_of_peak"] is not None:
            shares = figures.setdefault("unet_share_of_peak", {}).setdefault(model, {}).setdefault(path, {})
            shares[batch] = row["share_of_peak"]
        if batch == "1":
            figures.setdefault("first_call_seconds", {}).setdefault(model, {})[path] = row["first_call_seconds"]
            figures.setdefault("stage_shares", {}).setdefault(model, {})[path] = row["stages"]["shares"]
    bench = _measured(records.get("bench"))
    if bench:
        figures["peak_tflops"] = bench["peak_tflops"]
    dreambooth = _measured(records.get("dreambooth"))
    if dreambooth:
        figures["dreambooth"] = {
            item["mode"]: {
                key: item.get(key)
                for key in (
                    "step_median_s",
                    "peak_memory_bytes",
                    "plan_expected_peak_bytes",
                    "measured_over_expected",
                    "fits_under_cap",
                    "error",
                )
            }
            for item in dreambooth["modes"]
        }
    daam = _measured(records.get("daam"))
    if daam:
        figures["daam_overhead"] = {item["model"]: item["overhead_ratio"] for item in daam["models"]}
    quality = _measured(records.get("quality"))
    if quality:
        figures["quality_seconds_per_picture"] = quality["seconds_per_picture"]
    flexible = _measured(records.get("flexible_unet"))
    if flexible:
        figures["flexible_unet"] = {
            key: flexible[key] for key in ("max_relative_error", "half_trajectory_finite", "steps", "half_dtype")
        }
    return figures


def write_summary(ctx: Context, finished: bool) -> Path:
    """The run's summary: every part's status, the headline figures, the environment and the log."""
    assert ctx.out is not None, "a run that writes files has a folder"
    profile = ctx.profile
    statuses = []
    for part in ctx.parts:
        record = ctx.records.get(part.name)
        if record is None:
            statuses.append({"part": part.name, "title": part.title, "status": "not reached"})
            continue
        entry = {key: record.get(key) for key in ("part", "title", "status", "elapsed_s", "started_at_s")}
        if "reason" in record:
            entry["reason"] = record["reason"]
        if "error" in record:
            entry["error"] = {key: record["error"][key] for key in ("type", "message")}
        entry["file"] = f"{part.name}.json"
        statuses.append(entry)
    summary = {
        "suite_version": SUITE_VERSION,
        "finished": finished,
        "dry_run": profile.dry_run,
        "weights": profile.weights,
        "profile": dataclasses.asdict(profile),
        "budget_s": ctx.budget_s,
        "wall_s": round(ctx.elapsed(), 3),
        "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) if finished else None,
        "environment": ctx.shared.get("environment"),
        "parts": statuses,
        "figures": headline_figures(ctx.records, profile.fast_mode),
        "imported_distributions": imported_distributions() if finished else None,
        "log": ctx.log_lines[-LOG_LINES_KEPT:],
    }
    return write_json_atomic(ctx.out / SUMMARY, summary)


def run_suite(
    out: Path, profile: Profile, *, budget_s: float = DEFAULT_BUDGET_S, parts: tuple[Part, ...] = PARTS
) -> dict[str, dict[str, Any]]:
    """Run ``parts`` in order, writing each one's JSON and the summary after each; return the records."""
    if len(parts) + 1 > MAX_FILES:
        raise ValueError(f"{len(parts)} parts and the summary exceed the {MAX_FILES} files that come back.")
    out.mkdir(parents=True, exist_ok=True)
    if profile.dry_run and "OMP_NUM_THREADS" not in os.environ:
        # the tiny models' operations take microseconds: with more threads each ends at an OpenMP barrier, which on
        # a busy 2-core machine made the rehearsal 7 times slower (the test suite's conftest.py does the same)
        import torch

        torch.set_num_threads(1)
    ctx = Context(profile=profile, budget_s=budget_s, out=out, parts=parts)
    ctx.log(
        f"GPU suite v{SUITE_VERSION}, {'DRY RUN on the CPU' if profile.dry_run else profile.device}, "
        f"budget {budget_s:.0f} s, into {out}"
    )
    _quiet_libraries()
    ctx.shared["environment"] = _environment()
    write_summary(ctx, finished=False)
    for part in parts:
        write_json_atomic(out / f"{part.name}.json", run_part(part, ctx))
        write_summary(ctx, finished=False)
    records = ctx.records
    counts = {status: sum(r["status"] == status for r in records.values()) for status in ("ok", "skipped", "error")}
    ctx.log(f"done in {ctx.elapsed():.1f} s: {counts['ok']} ok, {counts['skipped']} skipped, {counts['error']} failed")
    write_summary(ctx, finished=True)
    return records


def _quiet_libraries() -> None:
    """No per-component loading bars in the log that comes back (only its last 12,000 characters do)."""
    with contextlib.suppress(ImportError):
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the parts' JSON files and summary.json")
    parser.add_argument("--dry-run", action="store_true", help="tiny stand-ins on the CPU: checks every part runs")
    parser.add_argument(
        "--budget-s", type=float, default=DEFAULT_BUDGET_S, help="parts that would start after this are skipped"
    )
    parser.add_argument("--parts", nargs="+", choices=[part.name for part in PARTS], help="run only these parts")
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error(f"--budget-s must be positive; got {args.budget_s}.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file; give a folder (it is created if missing).")
    chosen = tuple(part for part in PARTS if args.parts is None or part.name in args.parts)
    run_suite(out, DRY_RUN_PROFILE if args.dry_run else GPU_PROFILE, budget_s=args.budget_s, parts=chosen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
