"""Device and dtype choice, synchronisation and memory statistics for CUDA, Apple MPS and CPU."""

from __future__ import annotations

import torch

from nbhelpers.errors import ConfigurationError

_DTYPES = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
}


#: The device types this library runs on, in the order it prefers them.
DEVICE_TYPES = ("cuda", "mps", "cpu")


def available_devices() -> list[str]:
    """The devices this machine has, as ``pick_device`` accepts them: ``cuda:0`` ... (if any), ``mps``, ``cpu``."""
    found = [f"cuda:{index}" for index in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if torch.backends.mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


def pick_device(preferred: str | torch.device | None = None) -> torch.device:
    """Return ``preferred`` if given, else the best available device: CUDA, then Apple MPS, then CPU.

    Args:
        preferred: ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"cpu"`` (or a ``torch.device`` of those types).

    Raises:
        ConfigurationError: (a ``ValueError``) ``preferred`` is not one of those, or names a device this machine
            does not have; the message lists the ones it has.
    """
    if preferred is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    here = f"this machine has: {', '.join(available_devices())}"
    if not isinstance(preferred, (str, torch.device)):
        raise ConfigurationError(
            f"device must be a string: use cuda, cuda:N, mps or cpu; got {preferred!r} ({type(preferred).__name__}) "
            f"({here})."
        )
    try:
        device = torch.device(preferred.strip().lower() if isinstance(preferred, str) else preferred)
    except (RuntimeError, ValueError):  # torch's words for an unknown type list two dozen backends
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ConfigurationError(f"device {str(preferred)!r} is not supported: use cuda, cuda:N, mps or cpu ({here}).")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {str(preferred)!r} was requested but no CUDA GPU is visible ({here}).")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigurationError(f"device {str(preferred)!r} does not exist ({here}).")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigurationError(f"device {str(preferred)!r} was requested but Apple MPS is not available ({here}).")
    if device.type != "cuda" and device.index not in (None, 0):
        raise ConfigurationError(f"device {str(preferred)!r} does not exist ({here}).")
    return device


def pick_dtype(device: torch.device, preferred: str | torch.dtype | None = None) -> torch.dtype:
    """Return ``preferred`` if given, else float16 on CUDA and MPS and float32 on CPU.

    Half precision halves memory and is several times faster on GPUs; CPUs compute it slowly or not at all.

    Raises:
        ConfigurationError: ``preferred`` is not one of the dtypes listed in the message.
    """
    if isinstance(preferred, torch.dtype) and preferred.is_floating_point:
        return preferred
    if isinstance(preferred, str) and preferred.strip().lower() in _DTYPES:
        return _DTYPES[preferred.strip().lower()]
    if preferred is not None:
        raise ConfigurationError(f"Unknown dtype {preferred!r}; use one of {', '.join(sorted(_DTYPES))}.")
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def synchronize(device: torch.device | str | None) -> None:
    """Wait until all queued work on ``device`` has finished (a no-op on CPU)."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: torch.device | str | None) -> None:
    """Reset the allocator's peak-memory counter on a CUDA device (no-op elsewhere)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch.device(device))


def peak_memory_bytes(device: torch.device | str | None) -> int | None:
    """Peak bytes allocated by PyTorch on a CUDA device since the last reset; ``None`` off CUDA."""
    if device is not None and torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated(torch.device(device)))
    return None


def total_memory_bytes(device: torch.device | str | None) -> int | None:
    """Total memory of a CUDA device in bytes; ``None`` off CUDA."""
    if device is not None and torch.device(device).type == "cuda":
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return None
