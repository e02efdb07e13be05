"""The GPU targets table is rendered from the suite's summary, and benchmarks/README.md holds the current one."""

from __future__ import annotations

import copy

GIB = 2**30

FIGURES = {
    "fast_mode": "compile",
    "seconds_per_image": {
        "sd-v1-5": {"plain": {"1": 2.5}, "fast": {"1": 0.44}},
        "deci-v1": {"plain": {"1": 1.1}, "fast": {"1": 0.25}},
    },
    "first_call_seconds": {"sd-v1-5": {"plain": 3.0, "fast": 61.0}, "deci-v1": {"plain": 1.5, "fast": 55.0}},
    "unet_share_of_peak": {"sd-v1-5": {"plain": {"1": 0.05}, "fast": {"1": 0.3}}},
    "dreambooth": {
        "lora": {"step_median_s": 0.2, "peak_memory_bytes": 5 * GIB, "measured_over_expected": 1.1},
        "full": {"fits_under_cap": False, "error": "out of memory"},
        "full-gc": {"step_median_s": 0.3, "peak_memory_bytes": 14 * GIB, "measured_over_expected": 0.8,
                    "fits_under_cap": True},
    },
    "daam_overhead": {"sd-v1-5": 1.2, "deci-v1": 1.6},
    "flexible_unet": {"max_relative_error": 0.004, "half_trajectory_finite": True, "steps": 30},
}  # fmt: skip
SUMMARY = {
    "dry_run": False,
    "weights": "full-size architectures with RANDOM weights",
    "finished_at": "2026-12-05 12:00 UTC",
    "profile": {"size": 512},
    "environment": {"gpu_name": "NVIDIA H100 80GB HBM3", "packages": {"torch": "2.11.0", "diffusers": "0.42.1"}},
    "figures": FIGURES,
}


def _rows(table):
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("what", "---"):
            rows[cells[0]] = cells[1:]
    return rows


def test_figures_are_judged_against_the_targets(gpu_table):
    table = gpu_table.render(SUMMARY)
    assert "NVIDIA H100 80GB HBM3" in table and "torch 2.11.0" in table and "2026-12-05 12:00 UTC" in table
    rows = _rows(table)
    assert len(rows) == len(gpu_table.ROWS)
    assert rows["Fast path speed-up, SD v1.5 (plain / fast, batch 1)"] == [">= 5x", "x5.68", "met"]
    assert rows["Fast path speed-up, DeciDiffusion (plain / fast, batch 1)"] == [">= 5x", "x4.40", "**not met**"]
    assert rows["SD v1.5, s per 512 px image, batch 1, fastest path"] == ["<= 0.45 s", "0.440 s", "met"]
    assert rows["DeciDiffusion, s per 512 px image, batch 1, fastest path"][1:] == ["0.250 s", "**not met**"]
    assert rows["DeciDiffusion faster than SD v1.5 (SD / Deci, fastest paths)"][1:] == ["x1.76", "**not met**"]
    assert rows["First call of the fast path (compilation), SD v1.5"] == ["-", "61.0 s", "-"]
    assert rows["LoRA step under a T4's 15 GiB cap: peak memory"][1:] == ["5.00 GiB", "met"]
    assert rows["Full-UNet step (gradient checkpointing, AdamW) under the cap"][1:] == ["fits", "met"]
    assert rows["Full-UNet step (AdamW, no checkpointing) under the cap"][1:] == ["out of memory", "-"]
    assert rows["Memory plan's estimate against the measured peaks (worst mode)"][1:] == ["20% off", "**not met**"]
    assert rows["DAAM tracing overhead, DeciDiffusion, 512 px"][1:] == ["+60%", "**not met**"]
    assert rows["Flexible UNet fp16: NaN/inf over the 30 DDIM steps"][1:] == ["none", "met"]
    assert rows["Moonshot: UNet's share of the GPU's dense fp16 peak (fast path, best)"][1:] == ["30%", "**not met**"]


def test_a_number_changed_in_the_record_changes_the_table(gpu_table):
    summary = copy.deepcopy(SUMMARY)
    summary["figures"]["seconds_per_image"]["deci-v1"]["fast"]["1"] = 0.11
    summary["figures"]["flexible_unet"].update(half_trajectory_finite=False, first_non_finite_step=7)
    rows = _rows(gpu_table.render(summary))
    assert rows["Moonshot: DeciDiffusion, s per image, batch 1"][1:] == ["0.110 s", "met"]
    assert rows["Flexible UNet fp16: NaN/inf over the 30 DDIM steps"][1:] == ["from step 7", "**not met**"]


def test_nothing_measured_and_dry_runs_get_no_verdict(gpu_table):
    rows = _rows(gpu_table.render(None))
    assert {tuple(cells[1:]) for cells in rows.values()} == {("not measured", "-")}
    dry = copy.deepcopy(SUMMARY) | {"dry_run": True, "weights": "DRY RUN: tiny stand-ins"}
    table = gpu_table.render(dry)
    assert "DRY RUN" in table and "fp32 on the CPU" in table
    assert {cells[2] for cells in _rows(table).values() if cells[0] != "-"} == {"dry run: no verdict"}


def test_the_readme_table_is_the_rendered_record(gpu_table):
    assert gpu_table.main(["--check"]) == 0, "run: python benchmarks/gpu_table.py --write-readme"
