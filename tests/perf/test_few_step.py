"""The settings that test "the same quality in fewer steps", and the timing the GPU suite runs."""

from __future__ import annotations

from nbhelpers.perf.few_step import Setting, comparison_settings, run_few_step_benchmark


def test_the_comparison_holds_the_claim_and_its_controls():
    settings = comparison_settings()
    labels = [s.label for s in settings]
    assert labels[:4] == [
        "DeciDiffusion, 30 steps (default)",
        "SD v1.5, 50 steps (default)",
        "SD v1.5, 30 steps",
        "SD v1.5 DPM++, 20 steps",
    ]
    assert [s.unet_passes for s in settings] == [60, 100, 60, 40, 4, 16, 4]  # guidance doubles the passes
    assert comparison_settings(fast_paths=[])[-1].steps == 20
    assert Setting("sd-v1-5", steps=30).generation_kwargs() == {"num_inference_steps": 30}
    assert Setting("sd-v1-5", fast_path="tcd-lora").generation_kwargs() == {}  # the fast path's own defaults


def test_the_benchmark_rehearses_on_the_tiny_stand_ins():
    messages: list[str] = []
    record = run_few_step_benchmark(
        device="cpu",
        dry_run=True,
        size=64,
        repeats=1,
        log=messages.append,
        settings=[Setting("sd-v1-5", fast_path="lcm-lora")],
    )
    (row,) = record["results"]
    assert row["fast path"] == "lcm-lora" and row["steps"] == 2 and row["seconds_per_image"] > 0  # dry run: 2 steps
    assert "DRY RUN" in record["weights"] and messages and "4 UNet passes" in messages[0]
