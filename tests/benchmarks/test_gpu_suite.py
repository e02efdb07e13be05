"""The GPU suite's CPU rehearsal: every part runs (or skips with its reason) and writes what the GPU call returns."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.benchmarks.conftest import BENCHMARKS

pytestmark = pytest.mark.slow  # processes, servers or training runs: left out of make test-fast

#: what comes back from the GPU machine (the device notes' limits)
MAX_FILES, MAX_FILE_BYTES = 8, 16 * 2**20
RECORD_KEYS = {"part", "title", "status", "dry_run", "device", "started_at_s", "elapsed_s"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One rehearsal for the whole module: the folder it wrote and its summary."""
    out = tmp_path_factory.mktemp("gpu-dry")
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_suite.py"), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text()), result.stdout


def _record(out, name):
    return json.loads((out / f"{name}.json").read_text())


def test_the_rehearsal_writes_what_the_gpu_call_can_return(dry_run, gpu_suite):
    out, summary, _ = dry_run
    files = sorted(path for path in out.rglob("*") if path.is_file())
    assert len(files) <= MAX_FILES
    assert {path.name for path in files} == {f"{part.name}.json" for part in gpu_suite.PARTS} | {"summary.json"}
    assert all(path.parent == out and path.stat().st_size < MAX_FILE_BYTES for path in files)
    assert summary["finished"] is True and summary["dry_run"] is True
    assert "DRY RUN" in summary["weights"] and summary["finished_at"]
    assert [entry["part"] for entry in summary["parts"]] == [part.name for part in gpu_suite.PARTS]


def test_every_part_runs_or_skips_with_its_reason(dry_run):
    out, summary, stdout = dry_run
    statuses = {entry["part"]: entry["status"] for entry in summary["parts"]}
    for name in ("bench", "dreambooth", "flexible_unet", "daam", "bench_more", "quality"):
        assert statuses[name] == "ok", _record(out, name).get("error")
    optional = {"few_step": "nbhelpers.perf.few_step"}
    for name, module in optional.items():
        record = _record(out, name)
        if importlib.util.find_spec(module) is None:
            assert record["status"] == "skipped" and module in record["reason"]
        else:
            assert record["status"] == "ok", record.get("error")
    for entry in summary["parts"]:
        record = _record(out, entry["part"])
        assert RECORD_KEYS <= set(record) and record["dry_run"] is True and record["device"] == "cpu"
        assert record["elapsed_s"] >= 0 and ("results" in record) == (record["status"] == "ok")  # none failed
        assert f"part {entry['part']}: {entry['status']}" in stdout
    assert summary["log"] and "done in" in summary["log"][-1]


def test_bench_parts_measure_both_paths_with_stage_shares(dry_run):
    out, summary, _ = dry_run
    bench = _record(out, "bench")["results"]
    assert bench["peak_tflops"] is None  # the matmul probe needs CUDA
    rows = [row for run in bench["runs"] for row in run["results"]]
    assert [(r["model"], r["optimize"], r["batch_size"]) for r in rows] == [
        ("sd-v1-5", "none", 1),
        ("sd-v1-5", "fused", 1),
        ("deci-v1", "none", 1),
        ("deci-v1", "fused", 1),
    ]
    for row in rows:
        assert row["seconds_per_image"] > 0 and row["first_call_seconds"] > 0 and row["height"] == 64
        assert sum(row["stages"]["shares"].values()) == pytest.approx(1.0)
    more = _record(out, "bench_more")["results"]
    assert {(r["model"], r["batch_size"]) for run in more["runs"] for r in run["results"]} >= {
        ("sd-v1-5", 2),
        ("deci-v1", 2),
        ("small-sd-v0", 1),
    }
    assert more["skipped_variants"] == []
    figures = summary["figures"]
    assert figures["fast_mode"] == "fused"
    for model in ("sd-v1-5", "deci-v1"):
        assert set(figures["seconds_per_image"][model]) == {"plain", "fast"}
        assert figures["seconds_per_image"][model]["plain"]["1"] == next(
            r["seconds_per_image"] for r in rows if r["model"] == model and r["optimize"] == "none"
        )


def test_the_other_parts_record_their_figures(dry_run):
    out, summary, _ = dry_run
    dreambooth = _record(out, "dreambooth")["results"]
    assert dreambooth["memory_cap"]["applied"] is False and "needs CUDA" in dreambooth["memory_cap"]["reason"]
    assert [mode["mode"] for mode in dreambooth["modes"]] == ["lora", "full"]
    for mode in dreambooth["modes"]:
        assert mode["step_median_s"] > 0 and mode["plan_expected_peak_bytes"] > 0
    flexible = _record(out, "flexible_unet")["results"]
    assert flexible["steps"] == 30 and flexible["scheduler"] == "DDIMScheduler"
    assert flexible["prediction_type"] == "v_prediction" and flexible["half_dtype"] == "float16"
    assert len(flexible["relative_error_per_step"]) == 30 and flexible["half_trajectory_finite"] is True
    assert 0 < flexible["max_relative_error"] < 0.1  # half precision differs from fp32, by little
    daam = _record(out, "daam")["results"]
    assert [m["model"] for m in daam["models"]] == ["sd-v1-5", "deci-v1"]
    assert all(m["overhead_ratio"] > 0 for m in daam["models"])
    assert set(summary["figures"]["daam_overhead"]) == {"sd-v1-5", "deci-v1"}
    assert summary["figures"]["flexible_unet"]["half_trajectory_finite"] is True
    quality = _record(out, "quality")["results"]
    assert quality["pictures"] == 4 and quality["seconds_per_picture"] > 0 and "tiny" in quality["backbone"]
    assert summary["figures"]["quality_seconds_per_picture"] == quality["seconds_per_picture"]


def test_the_wheel_kit_carries_what_the_rehearsal_imported(dry_run, gpu_wheels):
    """A distribution the suite imports must travel as a wheel, be left to the machine for a stated reason, or be
    imported only because it is installed here (diffusers uses scipy, torchmetrics matplotlib, transformers protobuf,
    when present; the GPU machine has all three)."""
    from packaging.utils import canonicalize_name

    _, summary, _ = dry_run
    imported = {canonicalize_name(name) for name in summary["imported_distributions"]}
    carried = set(gpu_wheels.resolve_installed())
    machine = gpu_wheels.resolve_installed(roots=("torch", "numpy", *gpu_wheels.PROVIDED), provided=())
    optional_here = gpu_wheels.resolve_installed(roots=("scipy", "matplotlib", "colorama", "protobuf"), provided=())
    left_over = imported - carried - set(machine) - set(optional_here) - {"diffusion-nbhelpers"}
    assert not left_over, f"imported by the suite but not in the wheel kit: {sorted(left_over)}"


def test_a_failing_part_is_recorded_and_the_next_one_runs(tmp_path, gpu_suite):
    def broken(ctx):
        raise RuntimeError("planted failure")

    def missing_package(ctx):
        raise ModuleNotFoundError("No module named 'somepackage'", name="somepackage")

    def missing_own_module(ctx):
        raise ModuleNotFoundError("No module named 'nbhelpers.nothing'", name="nbhelpers.nothing")

    def fine(ctx):
        return {"answer": 42}

    parts = (
        gpu_suite.Part("broken", "raises", broken),
        gpu_suite.Part("missing_package", "needs a package", missing_package),
        gpu_suite.Part("missing_own_module", "a bug", missing_own_module),
        gpu_suite.Part("fine", "works", fine),
    )
    records = gpu_suite.run_suite(tmp_path, gpu_suite.DRY_RUN_PROFILE, parts=parts)
    broken_record = json.loads((tmp_path / "broken.json").read_text())
    assert broken_record["status"] == "error" and broken_record["elapsed_s"] >= 0
    assert broken_record["error"]["type"] == "RuntimeError"
    assert broken_record["error"]["message"] == "planted failure"
    assert "in broken" in broken_record["error"]["traceback"]
    assert records["missing_package"]["status"] == "skipped"
    assert "somepackage" in records["missing_package"]["reason"]
    assert records["missing_own_module"]["status"] == "error"
    assert json.loads((tmp_path / "fine.json").read_text())["results"] == {"answer": 42}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(p["part"], p["status"]) for p in summary["parts"]][:4] == [
        ("broken", "error"),
        ("missing_package", "skipped"),
        ("missing_own_module", "error"),
        ("fine", "ok"),
    ]
    assert summary["parts"][0]["error"] == {"type": "RuntimeError", "message": "planted failure"}


def test_figures_saved_before_a_failure_or_a_stop_are_kept(tmp_path, gpu_suite):
    seen_while_running = {}

    def measures_then_breaks(ctx):
        ctx.save_partial({"modes": [{"mode": "lora", "step_median_s": 0.2}]})
        seen_while_running["part"] = json.loads((tmp_path / "dreambooth.json").read_text())
        seen_while_running["summary"] = json.loads((tmp_path / "summary.json").read_text())
        raise RuntimeError("out of luck")

    parts = (gpu_suite.Part("dreambooth", "steps", measures_then_breaks),)
    records = gpu_suite.run_suite(tmp_path, gpu_suite.DRY_RUN_PROFILE, parts=parts)
    # what a run killed at that moment would have left
    assert seen_while_running["part"]["status"] == "running"
    assert seen_while_running["summary"]["parts"][0]["status"] == "running"
    assert seen_while_running["summary"]["figures"]["dreambooth"]["lora"]["step_median_s"] == 0.2
    # and after the failure
    assert records["dreambooth"]["status"] == "error"
    assert records["dreambooth"]["results"]["modes"][0]["step_median_s"] == 0.2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["figures"]["dreambooth"]["lora"]["step_median_s"] == 0.2


def test_parts_past_the_budget_are_skipped_and_bench_variants_too(tmp_path, gpu_suite):
    ran = []
    parts = (gpu_suite.Part("slow", "uses the budget", lambda ctx: ran.append(1) or {}),) * 1
    records = gpu_suite.run_suite(tmp_path, gpu_suite.DRY_RUN_PROFILE, budget_s=1e-9, parts=parts)
    assert ran == [] and records["slow"]["status"] == "skipped" and "time budget" in records["slow"]["reason"]
    # a bench variant that would end past the budget is listed, not started (the dry run estimates 2 s each)
    ctx = gpu_suite.Context(profile=gpu_suite.DRY_RUN_PROFILE, budget_s=1.0)
    results = gpu_suite.part_bench(ctx)
    assert results["runs"] == []
    assert [v["model"] for v in results["skipped_variants"]] == ["sd-v1-5", "deci-v1"]
    assert all("time budget" in v["reason"] for v in results["skipped_variants"])


def test_without_a_gpu_the_real_run_skips_every_part(tmp_path, gpu_suite):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu_suite.main(["--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {p["status"] for p in summary["parts"]} == {"skipped"}
    assert all("needs a CUDA GPU" in p["reason"] for p in summary["parts"])
    assert "RANDOM weights" in summary["weights"]


def test_the_gpu_profile_stays_inside_the_call(gpu_suite):
    profile = gpu_suite.GPU_PROFILE
    assert len(gpu_suite.PARTS) + 1 <= MAX_FILES
    assert [part.name for part in gpu_suite.PARTS][:2] == ["bench", "dreambooth"]  # the most valuable first
    assert profile.fast_mode == "compile" and profile.size == 512 and profile.device == "cuda"
    assert profile.warmup >= 2  # compile, then capture the CUDA graphs, before anything is timed
    assert gpu_suite.DEFAULT_BUDGET_S <= 7 * 60
    with pytest.raises(SystemExit):
        gpu_suite.main(["--out", "x", "--budget-s", "0"])
