"""Prompts files: text, CSV and JSONL rows with per-row seeds and settings, and one clear error per bad file."""

import json

import pytest

from nbhelpers.checks import MAX_PROMPT_CHARS, MAX_SEED
from nbhelpers.generation import validate_settings
from nbhelpers.jobs.rows import Row, RowsFileError, read_rows


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def test_text_file_one_prompt_per_line_trailing_blank_lines_ignored(tmp_path):
    path = _write(tmp_path, "prompts.txt", "a red circle\n  a blue square  \n\n\n")
    assert read_rows(path) == [Row(0, "a red circle", line=1), Row(1, "a blue square", line=2)]


def test_csv_with_per_row_seed_and_settings(tmp_path):
    content = '\ufeffprompt,seed,steps,guidance_scale,negative_prompt\na fox,7.0,20,,\n"a cat, asleep",,4,3.5,blurry\n'
    rows = read_rows(_write(tmp_path, "p.csv", content))
    assert rows[0] == Row(0, "a fox", seed=7, settings={"num_inference_steps": 20}, line=2)
    assert rows[1] == Row(
        1,
        "a cat, asleep",
        settings={"num_inference_steps": 4, "guidance_scale": 3.5, "negative_prompt": "blurry"},
        line=3,
    )


def test_jsonl_rows(tmp_path):
    lines = [{"prompt": "a fox", "seed": 3, "height": 64, "width": 128}, {"prompt": "a cat", "guidance": 2}]
    rows = read_rows(_write(tmp_path, "p.jsonl", "\n".join(map(json.dumps, lines)) + "\n\n"))
    assert rows[0].seed == 3 and rows[0].settings == {"height": 64, "width": 128}
    assert rows[1].settings == {"guidance_scale": 2.0} and rows[1].line == 2


def test_rows_keep_the_file_name_only_when_asked(tmp_path):
    path = _write(tmp_path, "a.csv", "prompt\nx\n")
    assert read_rows(path)[0].source == "" and read_rows(path, name_images_after_file=True)[0].source == "a.csv"
    assert Row.from_json(read_rows(path)[0].to_json()) == read_rows(path)[0]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("p.csv", "text\nhello\n", r"p\.csv, line 1: no 'prompt' column"),
        ("p.csv", "prompt,id,prompt\na,1,b\n", r"p\.csv, line 1: column\(s\) 'prompt' appear more than once"),
        ("p.csv", "prompt, prompt\na,b\n", r"p\.csv, line 1: column\(s\) 'prompt' appear more than once"),
        ("p.csv", "prompt,stesp\na,3\n", r"p\.csv, line 1: unknown column 'stesp' \(did you mean 'steps'\?\)"),
        ("p.csv", "prompt,steps\na,3\nb,many\n", r"p\.csv, line 3: steps must be a number; got 'many' \(str\)\.$"),
        (
            "p.csv",
            "prompt,steps\na,2.5\n",
            r"line 2: num_inference_steps must be between 1 and 1000 \(a whole number\); got 2\.5\.$",
        ),
        ("p.csv", "prompt,steps\na,0\n", r"p\.csv, line 2: num_inference_steps must be between 1 and 1000"),
        ("p.csv", "prompt,height\na,100\n", r"p\.csv, line 2: height must be a multiple of 8"),
        ("p.csv", "prompt,seed\na,-1\n", r"p\.csv, line 2: seed must be between 0 and"),
        (
            "p.csv",
            "prompt,guidance\na,nan\n",
            r"p\.csv, line 2: guidance_scale must be between 0 and 50 \(guidance is on above 1\); got nan",
        ),
        ("p.csv", "prompt\na\n\nb\n", r"p\.csv, line 3: empty row"),
        ("p.csv", "prompt,steps\n,3\n", r"p\.csv, line 2: empty prompt"),
        ("p.csv", 'prompt\n"a fox\nb cat\n', r"p\.csv, line 2: malformed CSV \(a quote opened there is never closed\)"),
        ("p.csv", "prompt\na,b\n", r"p\.csv, line 2: 2 values but 1 columns"),
        ("p.csv", "", r"p\.csv: empty file"),
        ("p.csv", "prompt\n", r"p\.csv: no prompts in the file"),
        ("p.txt", "a\n   \nb\n", r"p\.txt, line 2: empty prompt"),
        ("p.txt", b"a fox\nna\xefve\n", r"p\.txt, line 2: not UTF-8 text \(byte 8"),
        (
            "p.jsonl",
            '{"prompt": "a"}\n{"prompt": "b", "steps": "x"}\n',
            r"p\.jsonl, line 2: steps must be a number; got 'x'",
        ),
        ("p.jsonl", '{"prompt": "a", "sampler": "euler"}\n', r"p\.jsonl, line 1: unknown setting 'sampler'"),
        ("p.jsonl", '{"prompt": "a"}\n\n{"prompt": "b"}\n', r"p\.jsonl, line 2: not a JSON object \(an empty line\)"),
        ("p.jsonl", '["a"]\n', r"p\.jsonl, line 1: each line must be a JSON object"),
        ("p.jsonl", '{"text": "a"}\n', r"p\.jsonl, line 1: no 'prompt' key"),
        ("p.jsonl", '{"prompt": 3}\n', r"p\.jsonl, line 1: the prompt must be text"),
        (
            "p.jsonl",
            '{"prompt": "a", "steps": true}\n',
            r"line 1: num_inference_steps must be between 1 and 1000 \(a whole number\); got True \(bool\)",
        ),
        ("p.jsonl", '{"prompt": "a", "steps": 3, "num_inference_steps": 4}\n', r"line 1: num_inference_steps is given"),
        ("p.json", '[{"prompt": "a"}]', r"p\.json: write one JSON object per line"),
    ],
)
def test_a_bad_prompts_file_is_one_error_naming_file_and_line(tmp_path, name, content, message):
    with pytest.raises(RowsFileError, match=message):
        read_rows(_write(tmp_path, name, content))


def test_a_missing_file(tmp_path):
    with pytest.raises(RowsFileError, match="does not exist"):
        read_rows(tmp_path / "nope.txt")


def test_the_batch_contract_ignores_other_columns_and_keeps_empty_prompts(tmp_path):
    path = _write(tmp_path, "b.csv", "id,prompt,notes,notes\n1,a fox,x,y\n2,,z,w\n3\n")
    rows = read_rows(path, strict=False)
    assert [row.prompt for row in rows] == ["a fox", "", ""]
    with pytest.raises(RowsFileError, match="line 2: steps must be"):  # known columns are still checked
        read_rows(_write(tmp_path, "c.csv", "prompt,steps\na,x\n"), strict=False)


def test_a_row_takes_every_seed_generate_takes(tmp_path):
    """Prompts files refused seeds from 2**63 on, which generate() (torch.Generator) accepts."""
    for seed in (2**63, MAX_SEED):
        assert (
            validate_settings(
                num_inference_steps=None, guidance_scale=None, height=None, width=None, num_images=1, seed=seed
            )["seed"]
            == seed
        )
        assert read_rows(_write(tmp_path, "p.csv", f"prompt,seed\na,{seed}\n"))[0].seed == seed
        assert read_rows(_write(tmp_path, "p.jsonl", json.dumps({"prompt": "a", "seed": seed})))[0].seed == seed
    with pytest.raises(RowsFileError, match=rf"line 2: seed must be between 0 and {MAX_SEED} \(a whole number\); got"):
        read_rows(_write(tmp_path, "p.csv", f"prompt,seed\na,{MAX_SEED + 1}\n"))


def test_a_strict_file_refuses_an_over_long_prompt_before_any_work(tmp_path):
    """A 100,000-character row was refused only when it ran, though strict files promise refusal before any work."""
    path = _write(tmp_path, "p.txt", "a fox\n" + "x" * 100_000 + "\n")
    with pytest.raises(
        RowsFileError, match=rf"p\.txt, line 2: the prompt has 100,000 characters; at most {MAX_PROMPT_CHARS:,}"
    ):
        read_rows(path)
    assert [len(row.prompt) for row in read_rows(path, strict=False)] == [5, 100_000]  # the batch contract: per row
    assert len(read_rows(_write(tmp_path, "q.txt", "x" * MAX_PROMPT_CHARS))[0].prompt) == MAX_PROMPT_CHARS


def test_messages_end_with_one_full_stop(tmp_path):
    """Messages that already ended in "." were wrapped in another one ("got 0..")."""
    with pytest.raises(RowsFileError) as info:
        read_rows(_write(tmp_path, "p.csv", "prompt,steps\na,0\n"))
    assert str(info.value).endswith("got 0.") and ".." not in str(info.value)
