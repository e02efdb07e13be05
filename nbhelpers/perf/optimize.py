"""The fast path: one argument turns a loaded pipeline into its fastest equivalent.

Modes, each including the previous ones:

* ``"none"`` - the plain pipeline (the tutorials' recipe: fp16 on a GPU, eager PyTorch, SDPA attention);
* ``"channels_last"`` - UNet and VAE in channels-last memory layout (faster convolutions on tensor cores);
* ``"fused"`` - query/key/value projections fused into one matmul per attention (``fuse_qkv_projections``);
* ``"compile"`` - ``torch.compile`` of the UNet and the VAE decoder; on CUDA with
  ``mode="reduce-overhead"`` (CUDA graphs: on a fast GPU such as an H100 a batch-1 UNet step is so short that
  launching its kernels from Python takes longer than running them, and graphs remove the launches; on a T4 the
  arithmetic takes longer than the launches, the step is compute-bound, and graphs save less). The first call
  compiles (about a minute on an H100 per resolution and batch size); later calls with the same shapes reuse the
  compiled code.

All modes keep the output the same within fp16 tolerance; ``nbhelpers bench`` checks it on the same seed. The
few-step fast paths (fewer steps, other pictures) are :mod:`nbhelpers.perf.fast_paths`.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

OPTIMIZE_MODES = ("none", "channels_last", "fused", "compile")


def optimize_pipeline(pipe: Any, mode: str = "compile") -> Any:
    """Apply the fast path ``mode`` (see :data:`OPTIMIZE_MODES`) to ``pipe`` in place and return it.

    Raises:
        ValueError: unknown mode, or a pipeline already optimised with another mode (reload it instead).
    """
    if mode not in OPTIMIZE_MODES:
        raise ValueError(f"Unknown optimize mode {mode!r}; choose one of {', '.join(OPTIMIZE_MODES)}.")
    applied = getattr(pipe, "nbhelpers_optimize", "none")
    if applied == mode:
        return pipe
    if OPTIMIZE_MODES.index(mode) < OPTIMIZE_MODES.index(applied):
        raise ValueError(f"The pipeline is already optimised with {applied!r}; load it again for {mode!r}.")
    # Lazy: the bench settings read OPTIMIZE_MODES for `nbhelpers bench --help`, which should not load torch; a
    # pipeline to optimise means torch is loaded already.
    import torch

    level = OPTIMIZE_MODES.index(mode)
    if level >= 1:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if level >= 2 and applied in ("none", "channels_last"):
        pipe.unet.fuse_qkv_projections()
        pipe.vae.fuse_qkv_projections()
    if level >= 3:
        device = next(pipe.unet.parameters()).device
        compile_mode = "reduce-overhead" if device.type == "cuda" else "default"
        pipe.unet.compile(mode=compile_mode)
        pipe.vae.decoder.compile(mode=compile_mode)
        logger.info("torch.compile(mode=%r) set on the UNet and VAE decoder; the first call compiles.", compile_mode)
    pipe.nbhelpers_optimize = mode
    return pipe
