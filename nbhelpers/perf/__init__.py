"""Speed and memory: measure honestly, count the work, and take the fast path.

- :mod:`~nbhelpers.perf.timing`: ``measure`` (device synchronised, warm-up, median/min/max, peak memory).
- :mod:`~nbhelpers.perf.stages`: where one generation's time goes (prompt encoding, denoising loop, VAE decode).
- :mod:`~nbhelpers.perf.flops`: FLOPs per denoising step and parameters per component, in all and by resolution.
- :mod:`~nbhelpers.perf.optimize`: the fast path (channels_last, fused QKV, torch.compile): the same pictures, sooner.
- :mod:`~nbhelpers.perf.fast_paths`: the few-step fast paths for SD v1.x (LCM-LoRA, Hyper-SD, TCD): other pictures in
  fewer steps, with their authors' settings; :mod:`~nbhelpers.perf.fast_path_loras` writes random-weight stand-ins
  of their files for offline runs.
- :mod:`~nbhelpers.perf.few_step`: the settings that test "the same quality in fewer steps" and their timing.
- :mod:`~nbhelpers.perf.benchmark`: ``run_benchmark``, what ``nbhelpers bench`` runs;
  :mod:`~nbhelpers.perf.bench_settings`: its settings, ``BenchSettings`` (no torch: ``--help`` reads them).
"""
