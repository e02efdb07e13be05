"""The wheel kit for the GPU machine: the closure resolved here, and the checks that a folder of wheels installs."""

from __future__ import annotations

import subprocess
import zipfile
from importlib import metadata

import pytest


def make_wheel(folder, name, version, requires=(), tag="py3-none-any"):
    """A minimal wheel that pip installs: its name (tags), METADATA, WHEEL and RECORD, and one module."""
    stem = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{stem}-{tag}.whl"
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    files = {
        f"{name.replace('-', '_')}.py": "",
        f"{stem}.dist-info/METADATA": "\n".join(lines) + "\n",
        f"{stem}.dist-info/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    files[f"{stem}.dist-info/RECORD"] = "".join(f"{file},,\n" for file in [*files, f"{stem}.dist-info/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for file, text in files.items():
            archive.writestr(file, text)
    return path


def test_the_closure_is_pinned_to_what_is_installed_and_stops_at_the_machines_own(gpu_wheels):
    pins = gpu_wheels.resolve_installed()
    for root in gpu_wheels.ROOTS:
        assert pins[root] == metadata.version(root)
    assert "regex" in pins and "tokenizers" in pins  # transformers' requirements, found by walking
    assert not set(pins) & set(gpu_wheels.PROVIDED)
    assert "sympy" not in pins  # reached only through torch, which the machine has
    with pytest.raises(gpu_wheels.KitError, match="not installed here"):
        gpu_wheels.resolve_installed(roots=("a-distribution-nobody-installed",))


def test_markers_are_read_for_python_3_12_on_linux(gpu_wheels):
    requirements = gpu_wheels.requirements_of(
        [
            "tomli; python_version < '3.11'",
            "pywin32; sys_platform == 'win32'",
            "typing-extensions; python_version < '3.13'",
            "pytest; extra == 'test'",
            "rich; extra == 'cli'",
        ],
        extras=("cli",),
    )
    assert [req.name for req in requirements] == ["typing-extensions", "rich"]


def test_a_consistent_kit_passes(tmp_path, gpu_wheels):
    make_wheel(tmp_path, "alpha", "1.0", ["beta>=2", "torch", "tomli; python_version < '3.11'"])
    make_wheel(tmp_path, "beta", "2.1", tag="cp312-cp312-manylinux_2_17_x86_64")
    assert gpu_wheels.check_kit(tmp_path, {"alpha": "1.0", "beta": "2.1"}) == []


def test_what_would_break_the_install_is_reported(tmp_path, gpu_wheels):
    make_wheel(tmp_path, "alpha", "1.0", ["beta>=3", "gamma"])
    make_wheel(tmp_path, "beta", "2.1")
    make_wheel(tmp_path, "beta", "2.0")
    make_wheel(tmp_path, "delta", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64")
    make_wheel(tmp_path, "epsilon", "1.0", tag="cp312-cp312-macosx_11_0_arm64")
    problems = "\n".join(gpu_wheels.check_kit(tmp_path, {"alpha": "1.0", "beta": "2.1", "delta": "1.0", "zeta": "1"}))
    assert "beta: 2 wheels" in problems  # two versions stop the whole install
    assert "alpha needs beta>=3" in problems
    assert "alpha needs gamma: not in the kit, not on the machine" in problems
    assert "delta-1.0-cp311" in problems and "epsilon-1.0-cp312" in problems  # not for CPython 3.12 on x86-64
    assert "zeta==1: no wheel" in problems
    assert "epsilon: a wheel the kit does not need" in problems


def test_a_trial_install_rejects_a_wheel_for_another_python(tmp_path, gpu_wheels):
    make_wheel(tmp_path, "alpha", "1.0")
    assert gpu_wheels.trial_install(tmp_path) == []
    make_wheel(tmp_path, "beta", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64")
    (problem,) = gpu_wheels.trial_install(tmp_path)
    assert "not a supported wheel" in problem


def test_the_travelling_size_counts_what_git_does_not_ignore(tmp_path, gpu_wheels):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/.whl/\n")
    (tmp_path / "kept.txt").write_bytes(b"x" * 1000)
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "big.whl").write_bytes(b"x" * 5000)
    assert gpu_wheels.travelling_bytes(tmp_path) == 1000 + len("/.whl/\n")
    assert gpu_wheels.folder_bytes(tmp_path / ".whl") == 5000


def test_the_gpu_command_installs_the_kit_then_runs_the_suite(gpu_wheels):
    command = gpu_wheels.GPU_COMMAND
    assert command.index("pip install") < command.index("benchmarks/gpu_suite.py --out $OUT")
    for option in ("--no-index", "--no-deps", "--target /tmp/site", ".whl/*.whl", "PYTHONPATH=/tmp/site"):
        assert option in command
    assert "--dry-run" not in command and len(command) < 2000  # one run call takes 2,000 characters
