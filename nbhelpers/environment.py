"""A report of the machine the notebooks run on: platform, GPU, VRAM, CUDA and library versions."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata

import torch

REPORTED_PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "safetensors", "peft", "huggingface-hub")


def detect_platform() -> str:
    """Return ``"colab"``, ``"paperspace"``, ``"kaggle"`` or ``"local"`` from the environment variables each sets."""
    if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ:
        return "colab"
    if any(key.startswith("PAPERSPACE") for key in os.environ) or "PS_API_KEY" in os.environ:
        return "paperspace"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
        return "kaggle"
    return "local"


def package_versions(names: tuple[str, ...] = REPORTED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (``None`` when it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@dataclass
class EnvironmentReport:
    """What the notebooks need to know about the machine.

    ``gpu_memory_gib`` is the total memory of the first GPU in GiB (``None`` without a CUDA GPU).
    """

    platform: str
    python: str
    os: str
    device: str
    gpu_name: str | None
    gpu_memory_gib: float | None
    cuda_version: str | None
    mps_available: bool
    cpu_count: int
    packages: dict[str, str | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """The report as a JSON-serialisable dict."""
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) rows for a two-column table."""
        gpu = self.gpu_name or "none"
        if self.gpu_memory_gib is not None:
            gpu += f" ({self.gpu_memory_gib:.1f} GiB)"
        rows = [
            ("platform", self.platform),
            ("python", self.python),
            ("os", self.os),
            ("device used by default", self.device),
            ("GPU", gpu),
            ("CUDA", self.cuda_version or "none"),
            ("Apple MPS", "yes" if self.mps_available else "no"),
            ("CPU cores", str(self.cpu_count)),
        ]
        rows += [(name, version or "not installed") for name, version in self.packages.items()]
        return rows

    def __str__(self) -> str:
        width = max(len(label) for label, _ in self.rows())
        return "\n".join(f"{label:<{width}}  {value}" for label, value in self.rows())


def environment_report() -> EnvironmentReport:
    """Collect an :class:`EnvironmentReport` for this machine (reads only; changes nothing)."""
    has_cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if has_cuda else None
    mps = bool(torch.backends.mps.is_available())
    device = "cuda" if has_cuda else ("mps" if mps else "cpu")
    return EnvironmentReport(
        platform=detect_platform(),
        python=platform.python_version(),
        os=f"{platform.system()} {platform.release()}",
        device=device,
        gpu_name=props.name if props else None,
        gpu_memory_gib=round(props.total_memory / 2**30, 2) if props else None,
        cuda_version=torch.version.cuda if has_cuda else None,
        mps_available=mps,
        cpu_count=os.cpu_count() or 1,
        packages=package_versions(),
    )
