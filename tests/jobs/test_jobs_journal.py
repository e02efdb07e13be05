"""The journal: one line per finished row, a shard per worker, torn lines survived, shards folded."""

import json

import pytest

from nbhelpers.jobs.journal import Journal


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_merge_the_main_file_and_every_shard(tmp_path):
    with Journal(tmp_path) as main, Journal(tmp_path, "rank0") as first, Journal(tmp_path, "rank1") as second:
        main.append({"key": "a", "status": "failed"})
        first.append({"key": "a", "status": "ok"})
        second.append({"key": "b", "status": "ok"})
        second.append({"key": "a", "status": "failed"})  # a failure never hides a success
    assert {key: r["status"] for key, r in Journal(tmp_path).records().items()} == {"a": "ok", "b": "ok"}
    assert [p.name for p in Journal(tmp_path).files()] == [
        "progress.jsonl",
        "progress.rank0.jsonl",
        "progress.rank1.jsonl",
    ]


def test_a_later_record_of_a_key_replaces_an_earlier_one(tmp_path):
    with Journal(tmp_path) as journal:
        journal.append({"key": "a", "status": "failed", "error": "first"})
        journal.append({"key": "a", "status": "failed", "error": "second"})
    assert Journal(tmp_path).records()["a"]["error"] == "second"


def test_a_torn_line_is_skipped_and_the_next_record_starts_on_a_new_line(tmp_path):
    with Journal(tmp_path, "w1") as journal:
        journal.append({"key": "a", "status": "ok"})
    shard = tmp_path / "progress.w1.jsonl"
    shard.write_text(shard.read_text() + '{"key": "b", "sta')  # killed mid-write
    assert set(Journal(tmp_path).records()) == {"a"}
    with Journal(tmp_path, "w1") as journal:
        journal.append({"key": "c", "status": "ok"})
    assert set(Journal(tmp_path).records()) == {"a", "c"}


def test_fold_leaves_one_clean_file(tmp_path):
    with Journal(tmp_path) as main, Journal(tmp_path, "rank1") as other:
        main.append({"key": "a", "status": "ok"})
        other.append({"key": "b", "status": "ok"})
    (tmp_path / "progress.jsonl").write_text((tmp_path / "progress.jsonl").read_text() + "{torn")
    Journal(tmp_path).fold()
    assert [p.name for p in tmp_path.iterdir()] == ["progress.jsonl"]
    assert sorted(r["key"] for r in _lines(tmp_path / "progress.jsonl")) == ["a", "b"]


def test_bad_worker_names_and_records_without_key_are_refused(tmp_path):
    with pytest.raises(ValueError, match="worker name"):
        Journal(tmp_path, "../escape")
    with pytest.raises(ValueError, match="needs a 'key'"):
        Journal(tmp_path).append({"status": "ok"})
