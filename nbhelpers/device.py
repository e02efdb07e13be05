"""Device and dtype choice, synchronisation and memory statistics for CUDA, Apple MPS and CPU."""

from __future__ import annotations

import torch

_DTYPES = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
}


def pick_device(preferred: str | torch.device | None = None) -> torch.device:
    """Return ``preferred`` if given, else the best available device: CUDA, then Apple MPS, then CPU.

    Raises:
        ValueError: if ``preferred`` names a device this machine does not have.
    """
    if preferred is not None:
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was requested but no CUDA GPU is visible; use device='cpu'.")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device='mps' was requested but Apple MPS is not available; use device='cpu'.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, preferred: str | torch.dtype | None = None) -> torch.dtype:
    """Return ``preferred`` if given, else float16 on CUDA and MPS and float32 on CPU.

    Half precision halves memory and is several times faster on GPUs; CPUs compute it slowly or not at all.
    """
    if isinstance(preferred, torch.dtype):
        return preferred
    if isinstance(preferred, str):
        try:
            return _DTYPES[preferred.lower()]
        except KeyError:
            raise ValueError(f"Unknown dtype {preferred!r}; use one of {sorted(_DTYPES)}.") from None
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
