"""Resumable batch scoring over CSV files, and the batch scoring script that shares its row function.

A run killed with SIGKILL and resumed is tested on the job core the batch runner is built on
(``tests/jobs/test_jobs_processes.py``); here what the batch contract adds.
"""

import errno
import json

import pandas as pd
import pytest
from PIL import Image

from nbhelpers.endpoints.batch_runner import BatchFailedError, BatchInputError, read_prompts, run_batch
from nbhelpers.errors import ConfigurationError
from nbhelpers.images import read_image_metadata
from nbhelpers.jobs.run import OutputWriteError

FAST = {"num_inference_steps": 1}


def _write_csvs(folder, rows_per_file=(3, 2)):
    folder.mkdir(parents=True)
    for number, count in enumerate(rows_per_file):
        pd.DataFrame({"id": range(count), "prompt": [f"prompt {number}-{i}" for i in range(count)]}).to_csv(
            folder / f"part-{number}.csv", index=False
        )


def _pixels(path):
    return Image.open(path).convert("RGB").tobytes()


def _image_of_row(report, row):
    predictions = pd.read_csv(report.predictions)
    return report.predictions.parent / predictions.loc[predictions["row"] == row, "image"].item()


def test_an_edited_prompt_or_changed_parameters_are_generated_again(tmp_path, tiny_deci):
    """Issue 14: the journal was keyed by file and row only, so an edited row kept its old image."""
    (tmp_path / "in").mkdir()
    csv_file = tmp_path / "in" / "a.csv"
    pd.DataFrame({"prompt": ["a fox", "a cat"]}).to_csv(csv_file, index=False)
    first = run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters=FAST, progress=False)
    before = _pixels(_image_of_row(first, 0))
    pd.DataFrame({"prompt": ["a red fox", "a cat"]}).to_csv(csv_file, index=False)
    second = run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters=FAST, progress=False)
    assert (first.succeeded, second.succeeded, second.skipped) == (2, 1, 1)
    assert list(pd.read_csv(second.predictions)["prompt"]) == ["a red fox", "a cat"]
    image = _image_of_row(second, 0)
    assert _pixels(image) != before and Image.open(image).text["prompt"] == "a red fox"
    third = run_batch(
        tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters={"num_inference_steps": 2}, progress=False
    )
    assert (third.succeeded, third.skipped) == (2, 0)


def test_a_row_edited_back_is_never_reported_over_the_other_prompts_image(tmp_path, tiny_deci):
    """Issue 29: names depended on file and row only, so A -> B -> A reported prompt A over B's image."""
    (tmp_path / "in").mkdir()
    csv_file = tmp_path / "in" / "a.csv"
    made = {}
    for prompt in ("a fox", "a ship", "a fox"):
        pd.DataFrame({"prompt": [prompt]}).to_csv(csv_file, index=False)
        report = run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters=FAST, progress=False)
        image = _image_of_row(report, 0)
        assert Image.open(image).text["prompt"] == prompt == pd.read_csv(report.predictions)["prompt"][0]
        made.setdefault(prompt, []).append((image.name, _pixels(image), report.skipped))
    (fox_name, fox_pixels, _), (again_name, again_pixels, skipped) = made["a fox"]
    assert (again_name, again_pixels, skipped) == (fox_name, fox_pixels, 1)  # A's own image, not made again
    assert made["a ship"][0][0] != fox_name and made["a ship"][0][1] != fox_pixels
    # the same holds for the settings: B = other parameters
    other = run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters={"steps": 2}, progress=False)
    assert _image_of_row(other, 0).name != fox_name and read_image_metadata(_image_of_row(other, 0))["steps"] == 2
    back = run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters=FAST, progress=False)
    assert (_image_of_row(back, 0).name, back.skipped) == (fox_name, 1)


def test_a_misspelt_parameter_is_refused_with_the_accepted_names(tmp_path):
    (tmp_path / "in").mkdir()
    pd.DataFrame({"prompt": ["a fox"]}).to_csv(tmp_path / "in" / "a.csv", index=False)
    with pytest.raises(ConfigurationError, match=r"'num_inference_step' \(did you mean 'num_inference_steps'\?\)"):
        run_batch(tmp_path / "in", tmp_path / "out", pipe=object(), parameters={"num_inference_step": 2})
    with pytest.raises(ConfigurationError, match="accepted: num_inference_steps, guidance_scale"):
        run_batch(tmp_path / "in", tmp_path / "out", pipe=object(), parameters={"sampler": "euler"})
    with pytest.raises(ConfigurationError) as info:  # the message ended "got 0.." (its own full stop, then ours)
        run_batch(tmp_path / "in", tmp_path / "out", pipe=object(), parameters={"steps": 0})
    assert str(info.value).endswith("(a whole number); got 0.") and ".." not in str(info.value)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_two_prompt_columns_are_refused(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "two.csv").write_text("prompt,id,prompt\na fox,1,a ship\n")
    with pytest.raises(BatchInputError, match=r"two\.csv, line 1: column\(s\) 'prompt' appear more than once"):
        run_batch(tmp_path / "in", tmp_path / "out", pipe=object())


def test_a_full_disk_stops_with_one_error_and_predictions_for_what_finished(tmp_path, tiny_deci, monkeypatch):
    """Issue 29: a full or read-only folder gave a raw OSError and no predictions.csv."""
    import nbhelpers.generation

    _write_csvs(tmp_path / "in", (3,))
    real_save = nbhelpers.generation.Generation.save_one
    saved = []

    def save_until_full(self, index, path, model=None):
        if saved:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)
        return real_save(self, index, path, model)

    monkeypatch.setattr(nbhelpers.generation.Generation, "save_one", save_until_full)
    with pytest.raises(OutputWriteError, match="No space left on device.*finished so far are listed in .*predictions"):
        run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters=FAST, progress=False)
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(predictions["row"]) == [0] and list(predictions["status"]) == ["ok"]
    monkeypatch.undo()
    report = run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters=FAST, progress=False)
    assert (report.skipped, report.succeeded) == (1, 2)


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    _write_csvs(tmp_path / "in", (1,))
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigurationError, match="Cannot write to output folder .* output_folder"):
        run_batch(tmp_path / "in", blocker / "out", pipe=object())


def test_excel_bom_is_accepted(tmp_path, tiny_deci):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "excel.csv").write_bytes("\ufeffprompt,id\na fox,1\n".encode())
    assert read_prompts(tmp_path / "in" / "excel.csv") == ["a fox"]
    report = run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters=FAST, progress=False)
    assert report.succeeded == 1


@pytest.mark.parametrize(
    "content, message",
    [
        (b"prompt\n\xff\xfe a fox\n", r"latin\.csv, line 2: not UTF-8 text \(byte 7"),
        (
            b'prompt\n"a fox\nb cat\nc dog\n',
            r"latin\.csv, line 2: malformed CSV \(a quote opened there is never closed\)",
        ),
        (b'prompt\n"a fox" here\n', r"latin\.csv, line 2: malformed CSV"),
        (b"text\nhello\n", r"latin\.csv, line 1: no 'prompt' column"),
    ],
)
def test_unreadable_csv_names_the_file_and_line(tmp_path, content, message):
    """Issue 14: a non-UTF-8 file failed without naming it; an unbalanced quote silently merged rows."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "latin.csv").write_bytes(content)
    with pytest.raises(BatchInputError, match=message):
        run_batch(tmp_path / "in", tmp_path / "out", pipe=object())


def test_file_names_differing_in_case_do_not_overwrite_each_other(tmp_path, tiny_deci):
    (tmp_path / "in").mkdir()
    pd.DataFrame({"prompt": ["a fox"]}).to_csv(tmp_path / "in" / "a.csv", index=False)
    pd.DataFrame({"prompt": ["a ship"]}).to_csv(tmp_path / "in" / "a.CSV", index=False)
    report = run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters=FAST, progress=False)
    predictions = pd.read_csv(report.predictions)
    assert report.succeeded == 2 and predictions["image"].nunique() == 2
    assert predictions["image"].str.lower().nunique() == 2  # also on case-insensitive disks
    assert [Image.open(tmp_path / "out" / name).text["prompt"] for name in predictions["image"]] == ["a ship", "a fox"]


def test_a_torn_journal_line_is_recovered(tmp_path, tiny_deci):
    """Issue 14: after a crash mid-write, the next record was glued to the torn line and lost."""
    _write_csvs(tmp_path / "in", (3,))
    run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters=FAST, progress=False)
    journal = tmp_path / "out" / "progress.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # the last record torn in half
    again = run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters=FAST, progress=False)
    assert (again.skipped, again.succeeded) == (2, 1)
    records = [json.loads(line) for line in journal.read_text().splitlines()]  # every line parses again
    assert sorted(r["row"] for r in records) == [0, 1, 2]
    assert run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters=FAST, progress=False).skipped == 3


def test_batch_failures_are_recorded_and_the_threshold_decides(tmp_path, tiny_deci):
    (tmp_path / "in").mkdir()
    pd.DataFrame({"prompt": ["a fox", "", "a cat"]}).to_csv(tmp_path / "in" / "a.csv", index=False)
    with pytest.raises(BatchFailedError, match="1 row\\(s\\) failed, more than error_threshold=0"):
        run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters=FAST, progress=False)
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(predictions["status"]) == ["ok", "failed", "ok"]
    assert "empty prompt" in predictions["error"][1]
    report = run_batch(
        tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters=FAST, error_threshold=1, progress=False
    )
    assert report.skipped == 2 and report.failed == 1


def test_batch_input_errors(tmp_path):
    with pytest.raises(BatchInputError, match="does not exist"):
        run_batch(tmp_path / "missing", tmp_path / "out", pipe=object())
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchInputError, match="no .csv files"):
        run_batch(tmp_path / "empty", tmp_path / "out", pipe=object())


def test_batch_scoring_script_makes_the_same_images_as_run_batch(tmp_path, monkeypatch, tiny_deci):
    """Issue 12: the script and the local runner used different seeds; both now call score_row."""
    from nbhelpers.endpoints.scoring import batch_score

    _write_csvs(tmp_path / "in", (2,))
    monkeypatch.setattr(batch_score, "pipe", tiny_deci)
    monkeypatch.setattr(batch_score, "output_folder", tmp_path / "script")
    monkeypatch.setattr(batch_score, "parameters", FAST)
    (tmp_path / "script").mkdir()
    frame = batch_score.run([str(tmp_path / "in" / "part-0.csv")])
    assert list(frame["prompt"]) == ["prompt 0-0", "prompt 0-1"] and set(frame["status"]) == {"ok"}
    run_batch(tmp_path / "in", tmp_path / "local", pipe=tiny_deci, parameters=FAST, progress=False)
    for name in frame["image"]:
        assert _pixels(tmp_path / "script" / name) == _pixels(tmp_path / "local" / name)


def test_a_folder_model_and_the_pipeline_loaded_from_it_share_their_pictures(tmp_path, monkeypatch):
    """``run_batch(pipe=load_pipeline("./m"))`` keyed rows by the folder as written, ``run_batch(model="./m")`` by its
    absolute path: the second run made every picture again."""
    import shutil

    from nbhelpers.loading import load_pipeline
    from nbhelpers.models.tiny import tiny_pipeline_path

    shutil.copytree(tiny_pipeline_path("sd-v1-5"), tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    _write_csvs(tmp_path / "in", rows_per_file=(2,))
    pipe = load_pipeline("./m", stand_in="none", device="cpu", progress=False)
    assert pipe.nbhelpers_info.source == str((tmp_path / "m").resolve())
    first = run_batch("in", "out", pipe=pipe, parameters=FAST, progress=False)
    assert (first.succeeded, first.skipped) == (2, 0)
    second = run_batch("in", "out", model="./m", stand_in="none", parameters=FAST, progress=False)
    assert (second.succeeded, second.skipped) == (0, 2)
