"""How much DAAM tracing adds to generation time.

Runs the same generation plain and inside ``nbhelpers.daam`` (heat maps computed), alternating in one
process, each timed with ``nbhelpers.perf.timing.measure`` (synchronised, warmed up, median of the repeats), and
prints and saves the ratio.

    python benchmarks/daam_overhead.py                         # tiny models on the CPU (offline)
    python benchmarks/daam_overhead.py --full-size --device cuda   # real architectures, random weights, 512 px
    python benchmarks/daam_overhead.py --models sd-v1-5 --height 520 --width 648   # a size not a multiple of 64

Full size needs a GPU and uses random weights (timings only; the pictures mean nothing).
"""

from __future__ import annotations

import argparse

import torch

from nbhelpers.atomic import write_json_atomic
from nbhelpers.daam import set_seed, trace
from nbhelpers.environment import environment_report
from nbhelpers.loading import load_pipeline
from nbhelpers.perf.timing import measure

PROMPT = "A big owl with bright shinning eyes"


def _full_size_pipeline(name: str, device: str):
    try:
        from nbhelpers.models.random_weights import build_random_pipeline
    except ImportError as err:  # the benchmark harness of the comparison notebook provides it
        raise SystemExit(f"--full-size needs nbhelpers.models.random_weights ({err}).") from err
    return build_random_pipeline(name, device=device, dtype=torch.float16)


def measure_overhead(pipe, *, steps: int, height: int, width: int, repeats: int, device: str) -> dict[str, float]:
    """Median seconds per image plain and traced, and their ratio."""

    def plain():
        return pipe(PROMPT, num_inference_steps=steps, height=height, width=width, generator=set_seed(0))

    def traced():
        with trace(pipe) as tc:
            out = pipe(PROMPT, num_inference_steps=steps, height=height, width=width, generator=set_seed(0))
            tc.compute_global_heat_map().compute_word_heat_map("owl")
        return out

    with torch.no_grad():
        plain_timing = measure(plain, warmup=1, repeats=repeats, device=device)
        traced_timing = measure(traced, warmup=1, repeats=repeats, device=device)
    return {
        "plain_median_s": plain_timing.median_s,
        "traced_median_s": traced_timing.median_s,
        "overhead_ratio": traced_timing.median_s / plain_timing.median_s,
        "traced_peak_memory_bytes": traced_timing.peak_memory_bytes,
        "plain_peak_memory_bytes": plain_timing.peak_memory_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sd-v1-5", "deci-v1"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="real architectures with random weights")
    parser.add_argument("--steps", type=int, default=None, help="default: 10 tiny, 30 full size")
    parser.add_argument("--size", type=int, default=None, help="image side in px; default 256 tiny, 512 full")
    parser.add_argument("--height", type=int, default=None, help="image height in px (default: --size)")
    parser.add_argument("--width", type=int, default=None, help="image width in px (default: --size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/daam_overhead.json")
    args = parser.parse_args()
    steps = args.steps or (30 if args.full_size else 10)
    size = args.size or (512 if args.full_size else 256)
    height, width = args.height or size, args.width or size
    results = []
    for name in args.models:
        if args.full_size:
            pipe = _full_size_pipeline(name, args.device)
        else:
            pipe = load_pipeline(name, stand_in="tiny", device=args.device, progress=False)
        pipe.set_progress_bar_config(disable=True)
        figures = measure_overhead(
            pipe, steps=steps, height=height, width=width, repeats=args.repeats, device=args.device
        )
        label = "full size, random weights" if args.full_size else "tiny, random weights"
        results.append({"model": name, "weights": label, "steps": steps, "height": height, "width": width, **figures})
        print(
            f"{name} ({label}, {height}x{width} px, {steps} steps, {args.device}): "
            f"plain {figures['plain_median_s']:.3f} s, "
            f"traced {figures['traced_median_s']:.3f} s, overhead x{figures['overhead_ratio']:.2f}"
        )
        del pipe
    report = {"device": args.device, "environment": environment_report().as_dict(), "results": results}
    out = write_json_atomic(args.out, report)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
