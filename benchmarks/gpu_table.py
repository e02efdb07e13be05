"""The GPU targets table, rendered from the suite's ``summary.json`` so that no figure is copied by hand.

    python benchmarks/gpu_table.py                          # print it from benchmarks/results/gpu/summary.json
    python benchmarks/gpu_table.py OUT/summary.json         # from another run's summary
    python benchmarks/gpu_table.py --write-readme           # rewrite the table in benchmarks/README.md
    python benchmarks/gpu_table.py --check                  # exit 1 if benchmarks/README.md's table is stale

Without a summary every row reads "not measured". A dry run's figures (tiny stand-ins on the CPU) are shown but
judged against nothing: they are no model's figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
if str(BENCHMARKS.parent) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS.parent))

from nbhelpers.tutorials.docs import replace_block  # noqa: E402 - the repository root is put on the path above

RECORD = BENCHMARKS / "results" / "gpu" / "summary.json"
README = BENCHMARKS / "README.md"
BLOCK = "gpu-targets"
GIB = 2**30

Figures = dict[str, Any]


def _get(figures: Figures, *keys: str) -> Any:
    value: Any = figures
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _seconds(model: str, path: str) -> Callable[[Figures], float | None]:
    return lambda figures: _get(figures, "seconds_per_image", model, path, "1")


def _fastest(model: str) -> Callable[[Figures], float | None]:
    def value(figures: Figures) -> float | None:
        found = [_get(figures, "seconds_per_image", model, path, "1") for path in ("plain", "fast")]
        measured = [seconds for seconds in found if seconds is not None]
        return min(measured) if measured else None

    return value


def _ratio(numerator: Callable[[Figures], float | None], denominator: Callable[[Figures], float | None]) -> Any:
    def value(figures: Figures) -> float | None:
        top, bottom = numerator(figures), denominator(figures)
        return top / bottom if top is not None and bottom else None

    return value


def _dreambooth(mode: str, key: str, scale: float = 1.0) -> Callable[[Figures], float | None]:
    def value(figures: Figures) -> float | None:
        found = _get(figures, "dreambooth", mode, key)
        return found / scale if isinstance(found, int | float) else None

    return value


def _plan_error(figures: Figures) -> float | None:
    """The largest relative difference of the memory plan's estimate from a measured peak, over the modes."""
    ratios = [
        item.get("measured_over_expected")
        for item in (_get(figures, "dreambooth") or {}).values()
        if item.get("measured_over_expected")
    ]
    return max(abs(ratio - 1) for ratio in ratios) if ratios else None


def _best_share(figures: Figures) -> float | None:
    shares = [
        share
        for model in (_get(figures, "unet_share_of_peak") or {}).values()
        for share in (model.get("fast") or {}).values()
    ]
    return max(shares) if shares else None


def _non_finite_step(figures: Figures) -> float | None:
    """-1 when the fp16 trajectory stayed finite, else the first step with NaN/inf (``None``: not measured)."""
    flexible = _get(figures, "flexible_unet")
    if not flexible:
        return None
    return -1.0 if flexible["half_trajectory_finite"] else float(flexible.get("first_non_finite_step") or 0)


def _fits(mode: str) -> Callable[[Figures], float | None]:
    def value(figures: Figures) -> float | None:
        fits = _get(figures, "dreambooth", mode, "fits_under_cap")
        return None if fits is None else float(bool(fits))

    return value


@dataclass(frozen=True)
class Row:
    """One line of the table: what, the target as the issue states it, how to read it and whether it is met."""

    what: str
    target: str
    value: Callable[[Figures], float | None]
    shown: Callable[[float], str]
    met: Callable[[float], bool] | None = None


def _x(value: float) -> str:
    return f"x{value:.2f}"


def _s(value: float) -> str:
    return f"{value:.3f} s"


ROWS = (
    Row("Fast path speed-up, SD v1.5 (plain / fast, batch 1)", ">= 5x",
        _ratio(_seconds("sd-v1-5", "plain"), _seconds("sd-v1-5", "fast")), _x, lambda v: v >= 5),
    Row("Fast path speed-up, DeciDiffusion (plain / fast, batch 1)", ">= 5x",
        _ratio(_seconds("deci-v1", "plain"), _seconds("deci-v1", "fast")), _x, lambda v: v >= 5),
    Row("SD v1.5, s per 512 px image, batch 1, fastest path", "<= 0.45 s", _fastest("sd-v1-5"), _s,
        lambda v: v <= 0.45),
    Row("DeciDiffusion, s per 512 px image, batch 1, fastest path", "<= 0.22 s", _fastest("deci-v1"), _s,
        lambda v: v <= 0.22),
    Row("DeciDiffusion faster than SD v1.5 (SD / Deci, fastest paths)", ">= 2x",
        _ratio(_fastest("sd-v1-5"), _fastest("deci-v1")), _x, lambda v: v >= 2),
    Row("First call of the fast path (compilation), SD v1.5", "-",
        lambda f: _get(f, "first_call_seconds", "sd-v1-5", "fast"), lambda v: f"{v:.1f} s"),
    Row("First call of the fast path (compilation), DeciDiffusion", "-",
        lambda f: _get(f, "first_call_seconds", "deci-v1", "fast"), lambda v: f"{v:.1f} s"),
    Row("LoRA step under a T4's 15 GiB cap: peak memory", "<= 6 GiB",
        _dreambooth("lora", "peak_memory_bytes", GIB), lambda v: f"{v:.2f} GiB", lambda v: v <= 6),
    Row("LoRA step under the cap: time", "<= 0.25 s", _dreambooth("lora", "step_median_s"), _s, lambda v: v <= 0.25),
    Row("Full-UNet step (gradient checkpointing, AdamW) under the cap", "fits in 15 GiB", _fits("full-gc"),
        lambda v: "fits" if v else "out of memory", lambda v: bool(v)),
    Row("Full-UNet step (AdamW, no checkpointing) under the cap", "-", _fits("full"),
        lambda v: "fits" if v else "out of memory"),
    Row("Memory plan's estimate against the measured peaks (worst mode)", "within 15%", _plan_error,
        lambda v: f"{100 * v:.0f}% off", lambda v: v <= 0.15),
    Row("DAAM tracing overhead, SD v1.5, 512 px", "<= +50%", lambda f: _get(f, "daam_overhead", "sd-v1-5"),
        lambda v: f"{100 * (v - 1):+.0f}%", lambda v: v <= 1.5),
    Row("DAAM tracing overhead, DeciDiffusion, 512 px", "<= +50%", lambda f: _get(f, "daam_overhead", "deci-v1"),
        lambda v: f"{100 * (v - 1):+.0f}%", lambda v: v <= 1.5),
    Row("Flexible UNet fp16: NaN/inf over the 30 DDIM steps", "none", _non_finite_step,
        lambda v: "none" if v < 0 else f"from step {v:.0f}", lambda v: v < 0),
    Row("Flexible UNet fp16 against fp32: largest relative error of a step's output", "-",
        lambda f: _get(f, "flexible_unet", "max_relative_error"), lambda v: f"{v:.1e}"),
    Row("CLIP score (ViT-L/14, random weights), ms per 512 px picture", "-",
        lambda f: _get(f, "quality_seconds_per_picture"), lambda v: f"{1e3 * v:.1f} ms"),
    Row("Moonshot: UNet's share of the GPU's dense fp16 peak (fast path, best)", ">= 40%", _best_share,
        lambda v: f"{100 * v:.0f}%", lambda v: v >= 0.4),
    Row("Moonshot: SD v1.5, s per image, batch 1", "<= 0.25 s", _fastest("sd-v1-5"), _s, lambda v: v <= 0.25),
    Row("Moonshot: DeciDiffusion, s per image, batch 1", "<= 0.12 s", _fastest("deci-v1"), _s, lambda v: v <= 0.12),
)  # fmt: skip


def _source_line(summary: dict[str, Any] | None, source: str) -> str:
    if summary is None:
        return "Not measured yet: no GPU run of `benchmarks/gpu_suite.py` is recorded in `benchmarks/results/gpu/`."
    environment = summary.get("environment") or {}
    packages = environment.get("packages") or {}
    machine = environment.get("gpu_name") or "no GPU"
    versions = ", ".join(f"{name} {packages[name]}" for name in ("torch", "diffusers") if packages.get(name))
    fast = _get(summary, "figures", "fast_mode")
    size = _get(summary, "profile", "size")
    precision = "fp32 on the CPU" if summary.get("dry_run") else "fp16"
    return (
        f"From `{source}` ({summary.get('finished_at') or 'unfinished run'}): {summary['weights']}; {machine}"
        f"{'; ' + versions if versions else ''}; fast path `{fast}`; {precision}, {size} px, guided, batch 1 "
        "unless stated."
    )


def render(summary: dict[str, Any] | None, source: str = "benchmarks/results/gpu/summary.json") -> str:
    """The Markdown table of targets and measured figures (``summary`` ``None``: nothing measured)."""
    figures = (summary or {}).get("figures") or {}
    dry_run = bool(summary and summary.get("dry_run"))
    lines = [
        _source_line(summary, source),
        "",
        "| what | target | measured | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for row in ROWS:
        value = row.value(figures)
        if value is None:
            measured, verdict = "not measured", "-"
        else:
            measured = row.shown(value)
            if row.met is None:
                verdict = "-"
            elif dry_run:
                verdict = "dry run: no verdict"
            else:
                verdict = "met" if row.met(value) else "**not met**"
        lines.append(f"| {row.what} | {row.target} | {measured} | {verdict} |")
    return "\n".join(lines) + "\n"


def load(path: Path | None) -> dict[str, Any] | None:
    """The summary at ``path`` (``None`` when there is none)."""
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("summary", nargs="?", type=Path, default=RECORD, help="the suite's summary.json")
    parser.add_argument("--write-readme", action="store_true", help="rewrite the table in benchmarks/README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if benchmarks/README.md's table is stale")
    args = parser.parse_args(argv)
    summary = load(args.summary)
    if args.summary != RECORD and summary is None:
        parser.error(f"{args.summary} is not a file; give the summary.json a suite run wrote.")
    try:
        source = str(args.summary.resolve().relative_to(BENCHMARKS.parent))
    except ValueError:
        source = str(args.summary)
    table = render(summary, source)
    if not (args.write_readme or args.check):
        print(table, end="")
        return 0
    text = README.read_text(encoding="utf-8")
    updated = replace_block(text, BLOCK, table)
    if args.check:
        if updated != text:
            print(f"stale: {README.relative_to(BENCHMARKS.parent)} (python benchmarks/gpu_table.py --write-readme)")
            return 1
        return 0
    README.write_text(updated, encoding="utf-8")
    print(f"rewrote the {BLOCK} table in {README.relative_to(BENCHMARKS.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
