"""The notebooks' display helpers: titles stay inside their figures, picture tables, the pipeline diagram, the
toy models' figures read from their record, and notebook 03's estimated T4 times."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from nbhelpers.notebook import (
    bar_chart,
    dreambooth_t4_rows,
    image_table,
    pipeline_diagram,
    project_record,
    toy_attention_table,
    toy_dreambooth_table,
    toy_guidance_table,
)
from nbhelpers.tutorials.docs import TOY_LESSONS_RECORD
from nbhelpers.tutorials.expectations import t4_seconds_per_image, t4_training_seconds

LONG_TITLE = "Pictures that show all three words of their prompt (12 prompts) (toy model (shapes))"


def _inside_figure(figure, artist) -> bool:
    figure.canvas.draw()
    box, frame = artist.get_window_extent(), figure.bbox
    return box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1


def test_a_long_chart_title_stays_inside_its_figure():
    ax = bar_chart(["1", "2", "3", "7.5", "12"], [64, 71, 60, 38, 32], title=LONG_TITLE, ylabel="%")
    assert ax.get_title().replace("\n", " ") == LONG_TITLE  # wrapped, not shortened
    assert "\n" in ax.get_title()
    assert _inside_figure(ax.figure, ax.title)
    plt.close(ax.figure)


def test_an_unwrapped_title_of_that_length_would_run_off():
    """The check above can fail: the same title on one line is wider than the figure."""
    ax = bar_chart(["1", "2", "3", "7.5", "12"], [64, 71, 60, 38, 32], title="t", ylabel="%")
    ax.set_title(LONG_TITLE)
    assert not _inside_figure(ax.figure, ax.title)
    plt.close(ax.figure)


def test_image_table_labels_rows_columns_and_captions():
    picture = np.full((8, 8, 3), 200, dtype=np.uint8)
    figure = image_table(
        [[picture, None], [picture, picture]],
        row_labels=["ddim", "euler-a"],
        column_labels=["10 steps", "20 steps"],
        captions=[["0.4 s", "-"], ["0.5 s", "0.9 s"]],
        title="samplers (toy model (shapes))",
    )
    axes = figure.axes
    assert [ax.get_title() for ax in axes[:2]] == ["10 steps", "20 steps"]
    assert [axes[0].get_ylabel(), axes[2].get_ylabel()] == ["ddim", "euler-a"]
    assert [ax.get_xlabel() for ax in axes] == ["0.4 s", "-", "0.5 s", "0.9 s"]
    assert len(axes[0].images) == 1 and len(axes[1].images) == 0  # None leaves the cell empty
    assert "toy model (shapes)" in figure._suptitle.get_text()
    plt.close(figure)


def test_image_table_refuses_labels_that_do_not_fit():
    picture = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="one label per row and per column"):
        image_table([[picture, picture]], row_labels=["a"], column_labels=["only one"])
    with pytest.raises(ValueError, match="one caption per picture"):
        image_table([[picture]], row_labels=["a"], column_labels=["b"], captions=[["x", "y"]])


def test_pipeline_diagram_names_every_part_in_order_of_the_data():
    ax = pipeline_diagram()
    texts = " | ".join(t.get_text() for t in ax.texts)
    for part in ("prompt", "tokenizer", "text encoder (CLIP)", "UNet", "scheduler", "VAE decoder", "picture"):
        assert part in texts
    assert "77 x 768" in texts and "4 x 64 x 64" in texts
    assert len(ax.patches) == 8 + 8  # 8 boxes, 8 arrows
    plt.close(ax.figure)


def test_toy_guidance_table_follows_the_record(tmp_path: Path):
    record = json.loads(TOY_LESSONS_RECORD.read_text(encoding="utf-8"))
    record["models"]["deci"]["accuracy_by_guidance"]["2"]["all"] = 0.123
    record["models"]["sd"]["best_guidance"] = 1.0
    copy = tmp_path / "toy_lessons.json"
    copy.write_text(json.dumps(record), encoding="utf-8")
    how, rows = toy_guidance_table(copy)
    assert how == record["how"]
    by_scale = {row["guidance scale"]: row for row in rows}
    assert by_scale["2"]["DeciDiffusion-style toy: all three right"].startswith("12%")
    assert by_scale["1"]["SD-style toy: all three right"].endswith("(best)")
    assert [row["guidance scale"] for row in rows] == sorted(by_scale, key=float)


def test_toy_guidance_table_without_a_record_is_none(tmp_path: Path):
    assert toy_guidance_table(tmp_path / "missing.json") is None


def test_what_to_expect_shows_licences_the_total_download_and_the_source_of_the_estimates(capsys, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    from nbhelpers.notebook import show_what_to_expect

    show_what_to_expect(["deci-v1", "small-sd-v0"])
    table = shown[0]
    assert table.loc["small-sd-v0", "files"] == "fp32 only"
    assert "Open RAIL++-M" in table.loc["deci-v1", "licence (weights)"]
    printed = capsys.readouterr().out
    assert "about 7.0 GB" in printed  # 2.65 GB of fp16 files + 4.36 GB of fp32 files
    assert "7.83 s" in printed and "alexeigor/sd-benchmarks" in printed


def _edited_record(tmp_path: Path, edit) -> Path:
    record = json.loads(TOY_LESSONS_RECORD.read_text(encoding="utf-8"))
    edit(record)
    copy = tmp_path / "toy_lessons.json"
    copy.write_text(json.dumps(record), encoding="utf-8")
    return copy


def test_the_toy_dreambooth_table_prints_each_seed_of_the_record(tmp_path: Path):
    def edit(record):
        star = record["models"]["sd"]["dreambooth_star"]
        star.update(seeds=[5, 6], before=[0.25, 0.5], after=[0.75, 0.125], max_train_steps=77)

    how, rows = toy_dreambooth_table(_edited_record(tmp_path, edit))
    assert "full fine-tuning, 77 steps" in how
    assert rows == [
        {"seed": "5", "likeness before": "0.25", "likeness after": "0.75"},
        {"seed": "6", "likeness before": "0.50", "likeness after": "0.12"},
        {"seed": "mean", "likeness before": "0.38", "likeness after": "0.44"},
    ]
    no_run = _edited_record(tmp_path, lambda record: record["models"]["sd"].pop("dreambooth_star"))
    assert toy_dreambooth_table(no_run) is None
    assert toy_dreambooth_table(tmp_path / "missing.json") is None


def test_the_toy_attention_table_reads_both_models_and_both_layer_groups(tmp_path: Path):
    def edit(record):
        record["models"]["sd"]["attention_ratio"]["coarsest"] = {"mean": 2.345, "share_above_1": 0.5, "pictures": 9}

    how, rows = toy_attention_table(_edited_record(tmp_path, edit))
    assert "benchmarks/toy_lessons.py" in how
    by_key = {(row["toy model"], row["layers"]): row for row in rows}
    assert len(by_key) == 4
    coarsest = by_key["SD-style toy", "coarsest maps, mid-block included"]
    assert (coarsest["attention inside / area share (mean)"], coarsest["pictures above 1"]) == ("2.35", "50%")
    assert coarsest["pictures"] == "9"
    assert project_record("toy_lessons.json", tmp_path / "missing.json") is None


def test_dreambooth_t4_rows_add_up_the_runs_the_settings_ask_for():
    image_s, train_s = t4_seconds_per_image("sd-v1-4"), t4_training_seconds("sd-v1-4", 100)
    minutes = {
        row["part"]: row["T4 minutes (estimate)"]
        for row in dreambooth_t4_rows(
            "sd-v1-4",
            steps=100,
            pictures=10,
            prior_preservation=False,
            compare_prior_preservation=True,
            class_images=20,
        )
    }
    assert minutes["draw 10 pictures, 512 px"] == round(10 * image_s / 60, 1)
    assert minutes["generate 20 class images, 512 px (prior preservation)"] == round(20 * image_s / 60, 1)
    assert minutes["train 100 steps, without prior preservation (lower bound)"] == round(train_s / 60, 1)
    assert minutes["train 100 steps, with prior preservation (lower bound)"] == round(2 * train_s / 60, 1)
    assert minutes["total"] == round((30 * image_s + 3 * train_s) / 60, 1)
    alone = dreambooth_t4_rows(
        "sd-v1-4", steps=100, pictures=10, prior_preservation=False, compare_prior_preservation=False, class_images=20
    )
    assert [row["part"] for row in alone] == [
        "draw 10 pictures, 512 px",
        "train 100 steps, without prior preservation (lower bound)",
        "total",
    ]
