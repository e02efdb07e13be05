"""Ray Data with two CPU actors writes the same files as one process (needs the scale extra)."""

import pytest

from nbhelpers.cli import main
from nbhelpers.jobs import JobSpec, PipelineRecipe, read_rows
from nbhelpers.jobs.rows import normalise_settings

pytestmark = pytest.mark.slow  # processes, servers or training runs: left out of make test-fast

ray = pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install -e '.[scale]')")


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_two_ray_actors_write_the_same_files_as_one_process(tmp_path, local_ray):
    from nbhelpers.jobs.ray_engine import run_with_ray

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"prompt": "a red circle"}\n{"prompt": "a blue square", "seed": 7}\n{"prompt": "a fox", "steps": 3}\n'
        '{"prompt": "a ship"}\n'
    )
    args = ["generate", "--prompts-file", str(prompts), "--tiny", "--quiet", "--steps", "2"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    recipe = PipelineRecipe.make("deci-v1", stand_in="tiny")
    job = JobSpec(out=tmp_path / "ray", identity=recipe.identity(), settings=normalise_settings({"steps": 2}))
    report = run_with_ray(read_rows(prompts), job, recipe, concurrency=2, progress=False)
    assert (report.succeeded, report.failed, report.skipped) == (4, 0, 0)

    def files(folder):
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "progress.jsonl"}

    assert len(files(tmp_path / "one")) == 5 and files(tmp_path / "ray") == files(tmp_path / "one")
    again = run_with_ray(read_rows(prompts), job, recipe, concurrency=2, progress=False)
    assert (again.skipped, again.succeeded) == (4, 0)  # resumed from the journal: nothing left to do
