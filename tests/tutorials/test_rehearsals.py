"""The rehearsal harnesses' own logic (the rehearsals themselves run in .ci/run: they take minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rehearsals.common import clean_environment, notebook_path
from rehearsals.real_size import PARAMETERS, declared_parameters, weight_opens
from rehearsals.watch import write_sitecustomize


def _log(path: Path, files: list[Path]) -> Path:
    path.write_text("".join(json.dumps({"pid": 1, "path": str(f), "via": "safetensors"}) + "\n" for f in files))
    return path


def test_two_files_of_one_component_count_as_fetched_twice(tmp_path: Path):
    snapshot = tmp_path / "models--CompVis--stable-diffusion-v1-4" / "snapshots" / "abc"
    unet = snapshot / "unet"
    log = _log(
        tmp_path / "log.jsonl",
        [
            unet / "diffusion_pytorch_model.safetensors",
            snapshot / "vae" / "diffusion_pytorch_model.safetensors",
            unet / "diffusion_pytorch_model.safetensors",  # the same file again: read from the cache, no download
        ],
    )
    opened, twice = weight_opens(log, tmp_path)
    assert opened["CompVis/stable-diffusion-v1-4/unet"] == ["diffusion_pytorch_model.safetensors"]
    assert twice == []
    _log(log, [unet / "diffusion_pytorch_model.safetensors", unet / "diffusion_pytorch_model.fp16.safetensors"])
    _, twice = weight_opens(log, tmp_path)
    assert twice == [
        "CompVis/stable-diffusion-v1-4/unet: ['diffusion_pytorch_model.fp16.safetensors', "
        "'diffusion_pytorch_model.safetensors']"
    ]


def test_the_watch_records_weight_files_opened_by_any_python_process(tmp_path: Path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "a.safetensors")
    torch.save({"w": 1}, tmp_path / "b.bin")
    site = write_sitecustomize(tmp_path / "site").parent
    log = tmp_path / "opens.jsonl"
    code = (
        "import torch, safetensors.torch; safetensors.torch.load_file('a.safetensors'); torch.load('b.bin');"
        "open('c.bin', 'wb').close(); open('notes.txt').close()"
    )
    (tmp_path / "notes.txt").write_text("x")
    env = {
        **os.environ,
        "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "REHEARSAL_OPEN_LOG": str(log),
    }
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=120)
    seen = [(Path(e["path"]).name, e["via"]) for e in map(json.loads, log.read_text().splitlines())]
    assert seen == [("a.safetensors", "safetensors"), ("b.bin", "open")]  # reads of weights only


def test_only_parameters_a_notebook_declares_are_passed():
    declared = declared_parameters(notebook_path("01"))
    assert {"STEPS", "SIZE", "STAND_IN", "MODEL"} <= declared
    assert "RESOLUTION" not in declared and "RESOLUTION" in PARAMETERS


def test_clean_environment_hides_the_maintainers_checkout(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("VIRTUAL_ENV", "/venv")
    env = clean_environment(HF_HUB_OFFLINE="1")
    assert "PYTHONPATH" not in env and "VIRTUAL_ENV" not in env and env["HF_HUB_OFFLINE"] == "1"


def test_colab_rehearsal_injects_declared_parameters_after_the_parameters_cell(tmp_path: Path):
    import nbformat

    from rehearsals.colab import _parameterize

    target = tmp_path / "01.ipynb"
    _parameterize(notebook_path("01"), target, {"STEPS": 4, "NOT_DECLARED": 1})
    cells = nbformat.read(target, as_version=4).cells
    tags = [c.metadata.get("tags", []) for c in cells]
    injected = next(i for i, t in enumerate(tags) if "injected-parameters" in t)
    assert "parameters" in tags[injected - 1]
    assert "STEPS = 4" in cells[injected].source and "NOT_DECLARED" not in cells[injected].source
    first_code = next(c for c in cells if c.cell_type == "code")
    assert first_code.source.startswith("# Set-up")  # the bootstrap cell stays first
