"""`nbhelpers generate --prompts-file`: bad files and flags are one line and status 2; a failed row is status 1."""

import pandas as pd
import pytest

from nbhelpers.cli import main


@pytest.mark.parametrize(
    "content, extra, message",
    [
        ("prompt,prompt\na,b\n", [], "prompts.csv, line 1: column(s) 'prompt' appear more than once"),
        ("prompt,steps\na,x\n", [], "prompts.csv, line 2: steps must be a number; got 'x'"),
        ("prompt\na\n", ["--seed", "-1"], "seed must be between 0 and 18446744073709551615 (a whole number); got -1."),
        ("prompt\n" + "x" * 2001 + "\n", [], "prompts.csv, line 2: the prompt has 2,001 characters; at most 2,000"),
        ("prompt\na\n", ["--num-images", "2"], "--num-images is for prompts on the command line"),
        ("prompt\na\n", ["an owl"], "Give prompts on the command line or --prompts-file, not both"),
        ("prompt\na\n", ["--height", "100"], "height must be a multiple of 8"),
    ],
)
def test_bad_files_and_flags_are_one_line_and_status_2(tmp_path, capsys, monkeypatch, content, extra, message):
    """Refused before any model loads (``--seed -1`` and over-long prompts loaded the model, then failed every row)."""
    from nbhelpers.jobs import PipelineRecipe

    monkeypatch.setattr(PipelineRecipe, "load", lambda *args, **kwargs: pytest.fail("a model was loaded"))
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(content)
    status = main(["generate", "--prompts-file", str(prompts), "--tiny", "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (libraries imported on the way may warn first)
    assert status == 2 and last.startswith("nbhelpers generate: error: ") and message in last
    assert "Traceback" not in err


def test_no_prompt_at_all_is_refused(tmp_path, capsys):
    assert main(["generate", "--tiny", "--out", str(tmp_path)]) == 2
    assert "Give one or more prompts, or --prompts-file FILE" in capsys.readouterr().err


def test_a_failed_row_is_status_1_and_the_others_are_made(tmp_path, capsys, monkeypatch):
    import nbhelpers.generation

    real = nbhelpers.generation.generate

    def refuses_cats(pipe, prompt, **kwargs):
        if "cat" in prompt:
            raise RuntimeError("out of memory (pretend)")
        return real(pipe, prompt, **kwargs)

    monkeypatch.setattr(nbhelpers.generation, "generate", refuses_cats)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\na cat\na ship\n")
    status = main(["generate", "--prompts-file", str(prompts), "--tiny", "--steps", "2", "--out", str(tmp_path)])
    assert status == 1
    assert "1 row(s) failed (the 'error' column says why); run again" in capsys.readouterr().out
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    assert list(manifest["status"]) == ["ok", "failed", "ok"]
    assert manifest["error"][1] == "RuntimeError: out of memory (pretend)"


def test_a_full_disk_is_one_line_and_status_1_not_bad_input(tmp_path, capsys, monkeypatch):
    """A full disk exited with status 2, which the docs keep for input to change."""
    import errno

    import nbhelpers.generation

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nbhelpers.generation.Generation, "save_one", disk_full)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\n")
    flags = ["--tiny", "--steps", "1", "--quiet", "--out", str(tmp_path / "o")]
    status = main(["generate", "--prompts-file", str(prompts), *flags])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert status == 1 and len(errors) == 1 and errors[0].startswith("nbhelpers generate: error: Cannot write ")
    assert "No space left on device" in errors[0]
