"""Speed and memory: measure honestly, count the work, and take the fast path.

- :mod:`~nbhelpers.perf.timing`: ``measure`` (device synchronised, warm-up, median/min/max, peak memory).
- :mod:`~nbhelpers.perf.flops`: FLOPs per denoising step and parameters per component.
- :mod:`~nbhelpers.perf.optimize`: the fast path (channels_last, fused QKV, torch.compile).
- :mod:`~nbhelpers.perf.benchmark`: ``run_benchmark`` and the ``nbhelpers bench`` command.
"""
