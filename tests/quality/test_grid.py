"""The quality grid: every picture scored, a summary per setting, resumable, the same pictures as generate."""

import json

import pandas as pd
import pytest
from PIL import Image

from nbhelpers.cli import main
from nbhelpers.errors import ConfigurationError
from nbhelpers.quality.grid import GridSettings, grid_prompts, run_grid

pytest.importorskip("torchmetrics", reason="the quality extra is not installed")

#: Six toy captions spread over shapes, colours and backgrounds (every sixth of the toy-shapes set).
TOY_PROMPTS = [
    "a red circle on a white background",
    "a blue circle on a white background",
    "a red square on a black background",
    "a blue triangle on a white background",
    "a red circle on a gray background",
    "a blue square on a gray background",
]


def _settings(tmp_path, **kwargs):
    options = {"models": ["sd-v1-5"], "steps": [1, 2], "prompt_set": "toy-shapes", "limit": 2, "stand_in": "toy"}
    return GridSettings(out=tmp_path / "grid", device="cpu", **{**options, **kwargs})


def test_the_toy_readers_accuracy_rises_with_steps(tmp_path):
    """The grid's claim, not the model's: ``toy_accuracy`` in a grid's summary tells its settings apart (docs/quality.md
    says it "does measure something"), so a grid that scored the wrong cell's pictures, or one cell's for all, fails.
    The smallest grid that shows it needs a real difference between two cells; the toy's own lessons, with bounds
    from their records, are in tests/toy/test_toy_lessons.py. Measured on these six captions (seed 0, guidance 7.5):
    the SD-style toy reads 0.33 at 1 and 2 steps, 0.67 at 10, 0.83 at 20, so the 0.2 asked for is well inside the
    0.33 measured. The DeciDiffusion-style toy is already at 0.67-0.78 from 1 step to 20, so it is not used here."""
    prompts = tmp_path / "toy.txt"
    prompts.write_text("\n".join(TOY_PROMPTS) + "\n")
    report = run_grid(_settings(tmp_path, steps=[1, 10], prompt_set=None, prompts_file=prompts, limit=None))
    by_steps = {entry["steps"]: entry["toy_accuracy"]["mean"] for entry in report.settings}
    assert by_steps[10] >= by_steps[1] + 0.2, by_steps


def test_a_grid_writes_pictures_scores_and_a_labelled_summary(tmp_path, capsys):
    status = main(
        [
            "evaluate",
            "--stand-in",
            "toy",
            "--models",
            "sd-v1-5",
            "deci-v1",
            "--steps",
            "1",
            "2",
            "--limit",
            "2",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "grid"),
            "--quiet",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "sd-v1-5 default 1 steps none: clip_score" in printed and "(meaningless) toy_accuracy" in printed
    scores = pd.read_csv(tmp_path / "grid" / "scores.csv")
    assert list(scores.columns[:8]) == [
        "model",
        "scheduler",
        "steps",
        "fast_path",
        "prompt",
        "seed",
        "clip_score",
        "seconds_per_image",
    ]
    assert len(scores) == 8 and set(scores["status"]) == {"ok"}
    assert scores[["clip_score", "seconds_per_image", "toy_accuracy"]].notna().all().all()
    assert all((tmp_path / "grid" / name).is_file() for name in scores["image"])
    summary = json.loads((tmp_path / "grid" / "summary.json").read_text())
    assert summary["clip_meaningless"] and "meaningless" in summary["clip_label"]
    assert summary["made_by"] == "toy model (shapes)" and summary["device"] == "cpu"
    assert summary["versions"]["torchmetrics"] and summary["prompts"]["count"] == 2
    settings = [(s["model"], s["steps"]) for s in summary["settings"]]
    assert settings == [("sd-v1-5", 1), ("sd-v1-5", 2), ("deci-v1", 1), ("deci-v1", 2)]
    assert all(set(s) >= {"clip_score", "toy_accuracy", "seconds_per_image"} for s in summary["settings"])


def test_a_killed_grid_resumes_without_redoing_or_duplicating_rows(tmp_path, monkeypatch):
    import nbhelpers.jobs.run as run

    real, calls = run.run_row, []

    def killed_at_the_third_picture(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "run_row", killed_at_the_third_picture)
    with pytest.raises(KeyboardInterrupt):
        run_grid(_settings(tmp_path), progress=False)
    monkeypatch.undo()
    journal = [json.loads(line) for line in (tmp_path / "grid" / "progress.jsonl").read_text().splitlines()]
    assert len(journal) == 2
    report = run_grid(_settings(tmp_path), progress=False)
    assert (report.made, report.skipped) == (2, 2)
    scores = pd.read_csv(report.scores)
    assert len(scores) == 4 and not scores.duplicated(["model", "steps", "prompt", "seed"]).any()
    kept = {record["image"]: record["seconds"] for record in journal}
    assert all(scores.set_index("image").loc[name, "seconds_per_image"] == s for name, s in kept.items())


def test_the_same_seed_makes_the_same_picture_as_generate(tmp_path):
    report = run_grid(_settings(tmp_path, steps=[2], limit=1), progress=False)
    prompts = tmp_path / "one.txt"
    prompts.write_text("a red circle on a white background\n")
    args = ["generate", "--prompts-file", str(prompts), "--model", "sd-v1-5", "--toy", "--steps", "2", "--quiet"]
    assert main([*args, "--device", "cpu", "--out", str(tmp_path / "gen")]) == 0
    grid_picture = tmp_path / "grid" / pd.read_csv(report.scores)["image"][0]
    generated = tmp_path / "gen" / pd.read_csv(tmp_path / "gen" / "manifest.csv")["image"][0]
    assert Image.open(grid_picture).tobytes() == Image.open(generated).tobytes()


def test_a_fast_path_is_a_setting_of_the_grid(tmp_path):
    """The tiny stand-in runs a fast path's code (random-weight LoRA files in the real layout)."""
    status = main(
        ["evaluate", "--tiny", "--models", "sd-v1-5", "--fast-paths", "none", "lcm-lora", "--steps", "2"]
        + ["--limit", "1", "--device", "cpu", "--out", str(tmp_path / "grid"), "--quiet"]
    )
    assert status == 0
    scores = pd.read_csv(tmp_path / "grid" / "scores.csv")
    assert list(scores["fast_path"]) == ["none", "lcm-lora"] and set(scores["status"]) == {"ok"}
    assert scores["image"].nunique() == 2


def test_a_fast_path_that_cannot_apply_is_refused_before_any_work(tmp_path, capsys):
    status = main(
        [
            "evaluate",
            "--toy",
            "--models",
            "sd-v1-5",
            "--fast-paths",
            "none",
            "lcm-lora",
            "--out",
            str(tmp_path / "grid"),
        ]
    )
    assert status == 2 and "No few-step adapter exists for the toy stand-ins" in capsys.readouterr().err
    assert not (tmp_path / "grid").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps", "0"], "--steps must be between 1 and 1000 (a whole number); got 0."),
        (["--seeds", "-1"], "--seeds must be between 0 and 18446744073709551615 (a whole number); got -1."),
        (["--limit", "0"], "--limit must be at least 1 (a whole number); got 0."),
    ],
)
def test_bad_steps_seeds_or_limit_are_refused_before_any_model_loads(tmp_path, capsys, monkeypatch, flags, message):
    """``--steps 0`` or ``--seeds -1`` loaded every model, failed every row and exited 1."""
    from nbhelpers.jobs import PipelineRecipe

    monkeypatch.setattr(PipelineRecipe, "load", lambda *args, **kwargs: pytest.fail("a model was loaded"))
    status = main(["evaluate", "--toy", "--models", "sd-v1-5", "--out", str(tmp_path / "grid"), *flags])
    assert status == 2 and capsys.readouterr().err.strip().endswith(message)
    assert not (tmp_path / "grid").exists()


def test_the_prompt_source_is_one_of_a_set_and_a_file_and_a_files_own_seeds_are_refused(tmp_path):
    with pytest.raises(ConfigurationError, match=r"\(--prompts-file\)\.$"):  # neither: no "not both"
        grid_prompts(_settings(tmp_path, prompt_set=None))
    with pytest.raises(ConfigurationError, match="not both"):
        grid_prompts(_settings(tmp_path, prompts_file=tmp_path / "p.txt"))
    prompts = tmp_path / "p.csv"
    prompts.write_text("prompt,seed,steps\na red circle,,\na blue square,7,3\n")
    with pytest.raises(ConfigurationError, match=r"p\.csv, line 3: .* a row's own seed, num_inference_steps would not"):
        grid_prompts(_settings(tmp_path, prompt_set=None, prompts_file=prompts))
    prompts.write_text("prompt,seed,steps\na red circle,,\n")
    assert grid_prompts(_settings(tmp_path, prompt_set=None, prompts_file=prompts))[0] == ["a red circle"]
