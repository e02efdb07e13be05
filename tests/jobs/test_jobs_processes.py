"""One process, two processes (torchrun, as accelerate launches them on GPUs) and a killed run: the same files."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from nbhelpers.cli import main

pytestmark = pytest.mark.slow  # processes, servers or training runs: left out of make test-fast

PROMPTS = 'prompt,seed,steps\na red circle,,\na blue square,7,\n"a green, triangle",,3\na fox,,\na ship,,\n'


def _files(folder):
    """Every file's bytes by name, the journal aside (its line order follows which process finished first)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "progress.jsonl"}


def _generate_args(prompts, out, *extra):
    return ["generate", "--prompts-file", str(prompts), "--out", str(out), "--tiny", "--quiet", *extra]


def test_two_processes_write_the_same_bytes_and_manifest_as_one(tmp_path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(PROMPTS)
    assert main(_generate_args(prompts, tmp_path / "one", "--steps", "2")) == 0
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launch, "-m", "nbhelpers", *_generate_args(prompts, tmp_path / "two", "--steps", "2")],
        env={**os.environ, "ACCELERATE_USE_CPU": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "5 made, 0 already done, 0 failed of 5 rows" in done.stdout
    journal = (tmp_path / "two" / "progress.jsonl").read_text().splitlines()
    assert len(journal) == 5  # both processes' shards folded into one file
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert len(one) == 6 and one == two  # 5 pictures and manifest.csv, byte for byte


def test_a_run_killed_midway_resumes_with_every_row_exactly_once(tmp_path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(PROMPTS)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "nbhelpers", *_generate_args(prompts, out, "--steps", "20")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = out / "progress.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = len(journal.read_text().splitlines())
    assert 2 <= finished_before < 5, "the run should have been killed midway"
    assert not (out / "manifest.csv").exists()
    assert main(_generate_args(prompts, out, "--steps", "20")) == 0
    manifest = pd.read_csv(out / "manifest.csv")
    assert list(manifest["row"]) == [0, 1, 2, 3, 4] and set(manifest["status"]) == {"ok"}
    assert len(journal.read_text().splitlines()) == 5
    assert sorted(p.name for p in out.glob("*.png")) == sorted(manifest["image"])  # no picture twice, none torn
    assert not list(out.glob(".*"))  # no temporary files left
    assert main(_generate_args(prompts, out, "--steps", "20")) == 0  # a third run has nothing to do


def test_accelerates_one_process_cpu_launch_is_named(monkeypatch, caplog):
    """`accelerate launch --cpu --num_processes 2` starts one process (its multi-CPU mode needs MPI): say so."""
    from nbhelpers.jobs.processes import process_group

    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with caplog.at_level("WARNING"):
        assert process_group() is None
    assert "torchrun --nproc_per_node N -m nbhelpers" in caplog.text
