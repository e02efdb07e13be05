"""The row function: names from content, failures recorded per row, the size actually made recorded."""

import pytest

from nbhelpers.images import read_image_metadata
from nbhelpers.jobs import JobSpec, Journal, PipelineRecipe, Row, run_job, run_row
from nbhelpers.jobs.pipelines import check_fast_path, identity_of
from nbhelpers.jobs.run import pending

FAST = {"num_inference_steps": 2}


def _job(tmp_path, **kwargs):
    return JobSpec(out=tmp_path, identity={"model": "deci-v1", "stand_in": "tiny"}, settings=FAST, **kwargs)


def test_a_rows_name_and_key_follow_its_content_and_index(tmp_path):
    job = _job(tmp_path)
    row = Row(3, "a fox")
    assert job.image_name(row).startswith("00003-") and job.seed_of(row) == 3
    changed = [
        Row(3, "a cat"),
        Row(3, "a fox", seed=9),
        Row(3, "a fox", settings={"num_inference_steps": 3}),
        Row(4, "a fox"),
        Row(3, "a fox", source="a.csv"),
    ]
    names = {job.image_name(other) for other in changed}
    assert job.image_name(row) not in names and len(names) == len(changed)
    assert job.image_name(Row(3, "a fox")) == job.image_name(row)  # the same row, the same file
    other_model = JobSpec(out=tmp_path, identity={"model": "sd-v1-5", "stand_in": "tiny"}, settings=FAST)
    assert other_model.image_name(row) != job.image_name(row)
    assert JobSpec.from_json(job.to_json()) == job


def test_the_batch_identity_of_a_pipe_and_of_its_recipe_agree(tiny_deci):
    recipe = PipelineRecipe.make("deci-v1", stand_in="tiny")
    assert identity_of(tiny_deci) == {k: recipe.identity()[k] for k in ("model", "stand_in")}


def test_a_failing_row_is_recorded_and_the_others_go_on(tmp_path, tiny_deci, monkeypatch):
    import nbhelpers.generation

    real = nbhelpers.generation.generate

    def out_of_memory_on_cats(pipe, prompt, **kwargs):
        if "cat" in prompt:
            raise RuntimeError("CUDA out of memory (pretend)")
        return real(pipe, prompt, **kwargs)

    monkeypatch.setattr(nbhelpers.generation, "generate", out_of_memory_on_cats)
    rows = [Row(0, "a fox"), Row(1, "a cat"), Row(2, ""), Row(3, "a ship")]
    report = run_job(rows, _job(tmp_path), pipe=tiny_deci, progress=False)
    assert (report.succeeded, report.failed) == (2, 2)
    records = Journal(tmp_path).records()
    by_row = {record["row"]: record for record in records.values()}
    assert by_row[1]["error"] == "RuntimeError: CUDA out of memory (pretend)" and by_row[1]["image"] is None
    assert by_row[2]["error"] == "ValueError: empty prompt"
    assert [by_row[i]["status"] for i in range(4)] == ["ok", "failed", "failed", "ok"]
    assert [r.index for r in pending(rows, _job(tmp_path), records)] == [1, 2]  # failed rows are tried again


def test_the_record_holds_the_size_the_pipeline_made_and_the_png_its_settings(tmp_path, tiny_deci):
    record = run_row(tiny_deci, Row(0, "a fox", settings={"height": 64, "width": 128}), _job(tmp_path))
    assert (record["status"], record["width"], record["height"]) == ("ok", 128, 64)
    saved = read_image_metadata(tmp_path / record["image"])
    assert (saved["prompt"], saved["seed"], saved["steps"], saved["width"]) == ("a fox", 0, 2, 128)


def test_measure_adds_columns(tmp_path, tiny_deci):
    record = run_row(tiny_deci, Row(0, "a fox"), _job(tmp_path), measure=lambda image, row: {"side": image.width})
    assert record["side"] == 64


def test_a_fast_path_is_checked_before_any_work():
    check_fast_path("none", "deci-v1", "toy")  # the plain pipeline: always
    with pytest.raises(ValueError, match="Unknown fast path 'lcm'"):
        check_fast_path("lcm", "sd-v1-5", None)
    with pytest.raises(ValueError, match="No few-step adapter exists for the toy stand-ins"):
        check_fast_path("lcm-lora", "sd-v1-5", "toy")


def test_a_fast_path_is_part_of_the_identity(tmp_path):
    plain = PipelineRecipe.make("sd-v1-5", stand_in="tiny")
    fast = PipelineRecipe.make("sd-v1-5", stand_in="tiny", fast_path="lcm-lora")
    assert plain.identity() != fast.identity()
    job_plain = JobSpec(out=tmp_path, identity=plain.identity())
    assert job_plain.image_name(Row(0, "x")) != JobSpec(out=tmp_path, identity=fast.identity()).image_name(Row(0, "x"))


def test_a_ray_failure_is_reported_even_when_the_manifest_cannot_be_written(tmp_path, monkeypatch):
    """The Ray engine listed what finished with ``finish()`` inside its ``except``: a full disk there replaced the
    error that stopped the run. It now shares the one-process engine's ``finish_after_failure``."""
    import errno
    from types import SimpleNamespace

    import nbhelpers.jobs.processes as processes
    from nbhelpers.jobs import ray_engine

    def cluster_lost(items):
        raise RuntimeError("the cluster went away")

    context = SimpleNamespace(enable_progress_bars=True, print_on_execution_start=True)
    data = SimpleNamespace(DataContext=SimpleNamespace(get_current=lambda: context), from_items=cluster_lost)
    monkeypatch.setattr(ray_engine, "_ray", lambda: SimpleNamespace(data=data))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(processes, "write_table", disk_full)
    with pytest.raises(RuntimeError, match="the cluster went away"):
        ray_engine.run_with_ray([Row(0, "a fox")], _job(tmp_path), PipelineRecipe("deci-v1"), progress=False)
