"""The wheel kit for the offline GPU machine: what ``benchmarks/gpu_suite.py`` needs there, as wheels in ``.whl/``.

The GPU machine (Python 3.12, x86-64 Linux) has CUDA PyTorch and no network. Everything the suite imports beyond
what must or can stay the machine's own, or is never imported (:data:`PROVIDED`, each with its reason) travels
as wheels, pinned
to the versions installed in the Python that runs this script (the project's virtual environment), so the GPU runs
the code the tests ran:

    python benchmarks/gpu_wheels.py            # resolve, download into .whl/, check, print size and command line
    python benchmarks/gpu_wheels.py --check    # check .whl/ only (no download): one wheel per distribution, tags,
                                               # every requirement met, a trial install into an empty --target

The closure is read from the installed distributions' ``Requires-Dist`` with markers evaluated for CPython 3.12 on
x86-64 Linux, then checked again from each downloaded wheel's own METADATA. The repository's travelling files
(tracked and untracked-not-ignored) plus the kit must stay under the 64 MiB a call carries.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[1]
WHEEL_DIR = REPO_ROOT / ".whl"
#: what the suite imports beyond the standard library, torch and numpy (their requirements follow)
ROOTS = ("diffusers", "transformers", "accelerate", "peft", "safetensors", "huggingface-hub", "tokenizers")
#: never carried, and why; the walk through the requirements stops at these
PROVIDED = {
    "torch": "the machine's CUDA build must stay (a second torch would not see the GPU)",
    "numpy": "the machine's, built with its torch",
    "pillow": "on the machine (its package list in the device notes); 7 MiB would not fit beside the repository",
    "hf-xet": "used by huggingface-hub only to download, and the suite never downloads (4 MiB)",
    "typer": "the transformers and hf command lines only, which the suite never runs (with pydantic, rich: 5 MiB)",
    "click": "the hf command line only",
    "torchmetrics": "on the machine at the version tested here (1.9.0), for the CLIP score; needs lightning-utilities",
    "lightning-utilities": "on the machine (torchmetrics' requirement)",
}
#: what one call carries to the machine
TRAVEL_LIMIT_BYTES = 64 * 2**20
PYTHON = (3, 12)
#: manylinux tags the machine's glibc (Ubuntu 24.04, 2.39) accepts; pip matches each one exactly
PLATFORMS = tuple(f"manylinux_2_{minor}_x86_64" for minor in range(39, 16, -1)) + (
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
#: PEP 508 marker values of the GPU machine's interpreter
MARKER_ENVIRONMENT = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "platform_release": "",
    "platform_version": "",
}
GPU_COMMAND = (
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "
    ".whl/*.whl && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 && python3 benchmarks/gpu_suite.py --out $OUT"
)


class KitError(RuntimeError):
    """The kit cannot be built or is inconsistent; the message says what to fix."""


def _applies(requirement: Requirement, extra: str = "") -> bool:
    if requirement.marker is None:
        return True
    return requirement.marker.evaluate({**MARKER_ENVIRONMENT, "extra": extra})


def requirements_of(requires: Iterable[str], extras: Iterable[str] = ()) -> list[Requirement]:
    """The requirements (``Requires-Dist`` lines) that apply on the GPU machine, with those of ``extras``."""
    wanted = ("", *extras)
    parsed = [Requirement(line) for line in requires]
    return [req for req in parsed if any(_applies(req, extra) for extra in wanted)]


def resolve_installed(roots: Iterable[str] = ROOTS, provided: Iterable[str] = tuple(PROVIDED)) -> dict[str, str]:
    """``{distribution: version}`` of ``roots`` and everything they require, at the versions installed here.

    The walk stops at ``provided`` (the machine's torch and numpy): their own requirements are the machine's
    business, and a distribution the roots need as well (``filelock``, ``typing-extensions``) is carried at the
    version tested here.

    Raises:
        KitError: a required distribution is not installed here (install it into this environment first).
    """
    stop = {canonicalize_name(name) for name in provided}
    versions: dict[str, str] = {}
    pending: list[tuple[str, tuple[str, ...]]] = [(name, ()) for name in roots]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while pending:
        name, extras = pending.pop()
        key = canonicalize_name(name)
        if key in stop or (key, extras) in seen:
            continue
        seen.add((key, extras))
        try:
            distribution = metadata.distribution(key)
        except metadata.PackageNotFoundError:
            raise KitError(f"{key} is needed on the GPU machine but not installed here; install it first.") from None
        versions[key] = distribution.version
        for requirement in requirements_of(distribution.requires or [], extras):
            pending.append((requirement.name, tuple(sorted(requirement.extras))))
    return dict(sorted(versions.items()))


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str
    version: Version
    tags: frozenset[Tag]

    @classmethod
    def read(cls, path: Path) -> Wheel:
        name, version, _, tags = parse_wheel_filename(path.name)
        return cls(path=path, name=canonicalize_name(name), version=version, tags=tags)

    def requires(self) -> list[str]:
        """The wheel's own ``Requires-Dist`` lines (from its METADATA)."""
        with zipfile.ZipFile(self.path) as archive:
            names = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if len(names) != 1:
                raise KitError(f"{self.path.name} has {len(names)} METADATA files; it is not a valid wheel.")
            headers = HeaderParser().parsestr(archive.read(names[0]).decode("utf-8"))
        return headers.get_all("Requires-Dist") or []


def machine_tags() -> set[Tag]:
    """Every wheel tag CPython 3.12 on x86-64 manylinux installs."""
    platforms = list(PLATFORMS)
    return set(cpython_tags(PYTHON, platforms=platforms)) | set(compatible_tags(PYTHON, platforms=platforms))


def wheels_in(folder: Path) -> list[Wheel]:
    return [Wheel.read(path) for path in sorted(folder.glob("*.whl"))]


def check_kit(folder: Path, pins: dict[str, str] | None, provided: Iterable[str] = tuple(PROVIDED)) -> list[str]:
    """What is wrong with the wheels in ``folder`` (an empty list: nothing).

    Checks: one wheel per distribution; the pinned ones present at their versions and nothing else (when ``pins``
    is given); every wheel installable by CPython 3.12 on x86-64 manylinux; every requirement of every wheel
    (read from its METADATA) met by a wheel of the kit at a matching version, or by the machine (``provided``).
    """
    problems: list[str] = []
    wheels = wheels_in(folder)
    by_name: dict[str, list[Wheel]] = {}
    for wheel in wheels:
        by_name.setdefault(wheel.name, []).append(wheel)
    for name, found in sorted(by_name.items()):
        if len(found) > 1:
            problems.append(f"{name}: {len(found)} wheels ({', '.join(w.path.name for w in found)}); keep one")
    if pins is not None:
        for name, version in sorted(pins.items()):
            found_versions = [str(w.version) for w in by_name.get(name, [])]
            if not found_versions:
                problems.append(f"{name}=={version}: no wheel")
            elif Version(version) not in [Version(v) for v in found_versions]:
                problems.append(f"{name}: wheel {found_versions[0]}, installed here {version}")
        for name in sorted(set(by_name) - set(pins)):
            problems.append(f"{name}: a wheel the kit does not need")
    supported = machine_tags()
    for wheel in wheels:
        if not wheel.tags & supported:
            tags = ", ".join(sorted(str(tag) for tag in wheel.tags))
            problems.append(f"{wheel.path.name}: not installable by CPython 3.12 on x86-64 manylinux ({tags})")
    machine = {canonicalize_name(name) for name in provided}
    for wheel in wheels:
        for requirement in requirements_of(wheel.requires()):
            name = canonicalize_name(requirement.name)
            candidates = by_name.get(name, [])
            if candidates:
                if not any(requirement.specifier.contains(w.version, prereleases=True) for w in candidates):
                    problems.append(f"{wheel.name} needs {requirement}, the kit has {candidates[0].version}")
            elif name not in machine:
                problems.append(f"{wheel.name} needs {requirement}: not in the kit, not on the machine")
    return problems


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)


def _target_options() -> list[str]:
    options = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    for platform in PLATFORMS:
        options += ["--platform", platform]
    return options


def download(pins: dict[str, str], folder: Path) -> None:
    """Fetch each pinned wheel not already in ``folder``; remove the wheels no pin names (other versions)."""
    folder.mkdir(exist_ok=True)
    present = {(w.name, w.version): w for w in wheels_in(folder)}
    for wheel in present.values():
        if pins.get(wheel.name) is None or Version(pins[wheel.name]) != wheel.version:
            print(f"removing {wheel.path.name} (not pinned)")
            wheel.path.unlink()
    for name, version in pins.items():
        if (name, Version(version)) in present:
            continue
        result = _pip("download", "--no-deps", *_target_options(), "-d", str(folder), f"{name}=={version}")
        if result.returncode != 0:
            raise KitError(f"pip download {name}=={version} failed:\n{result.stderr.strip()[-2000:]}")
        print(f"downloaded {name}=={version}")


def trial_install(folder: Path) -> list[str]:
    """Install the kit as the GPU machine will, into an empty ``--target`` for CPython 3.12 (no index, no deps);
    return what went wrong (the installed distributions are checked against the wheels)."""
    with tempfile.TemporaryDirectory() as target:
        wheels = [str(path) for path in sorted(folder.glob("*.whl"))]
        result = _pip(
            "install", "--no-index", "--no-deps", "--no-compile", *_target_options(), "--target", target, *wheels
        )
        if result.returncode != 0:
            return [f"trial install failed: {result.stderr.strip()[-2000:]}"]
        installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions(path=[target])}
    expected = {w.name: str(w.version) for w in wheels_in(folder)}
    return [
        f"{name}: installed {installed.get(name)}, wheel {version}"
        for name, version in expected.items()
        if installed.get(name) is None or Version(installed[name]) != Version(version)
    ]


def travelling_bytes(repo: Path = REPO_ROOT) -> int:
    """Bytes of what a call carries without ``carry``: tracked files and untracked files git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    total = 0
    for name in filter(None, listed):
        path = repo / os.fsdecode(name)
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="check the folder only; download nothing")
    parser.add_argument("--folder", type=Path, default=WHEEL_DIR, help="the kit's folder (default .whl/)")
    args = parser.parse_args(argv)
    try:
        pins = resolve_installed()
        if not args.check:
            download(pins, args.folder)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    problems = check_kit(args.folder, pins) or trial_install(args.folder)
    kit, tree = folder_bytes(args.folder), travelling_bytes()
    print(
        f"{len(pins)} wheels in {args.folder}: {kit / 2**20:.1f} MiB; repository files {tree / 2**20:.1f} MiB; "
        f"together {(kit + tree) / 2**20:.1f} MiB of the {TRAVEL_LIMIT_BYTES / 2**20:.0f} MiB a call carries"
    )
    if kit + tree > TRAVEL_LIMIT_BYTES:
        problems.append("the repository and the kit exceed what a call carries")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("kit checked: one wheel per distribution, CPython 3.12 x86-64 tags, every requirement met, trial install ok")
    print(f'GPU command (carry [".whl"], timeout_s 600):\n{GPU_COMMAND}')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
