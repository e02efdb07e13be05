"""Model definitions and builders: everything that makes or describes a network.

- :mod:`~nbhelpers.models.configs`: every component config (SD v1.x, CLIP text encoder, VAE, DeciDiffusion's
  flexible UNet, and the tiny offline variants) in one place.
- :mod:`~nbhelpers.models.components`: the one place that maps a catalog entry to its pipeline class, scheduler
  and UNet.
- :mod:`~nbhelpers.models.flexible_unet`: DeciDiffusion's flexible UNet, native on current diffusers.
- :mod:`~nbhelpers.models.deci_pipeline`: ``DeciDiffusionPipeline`` (``StableDiffusionPipeline`` + that UNet).
- :mod:`~nbhelpers.models.tiny`: offline tiny pipelines in the hub repos' layout, and a fake hub cache.
- :mod:`~nbhelpers.models.random_weights`: full-size architectures with random weights (benchmarks, memory).
- :mod:`~nbhelpers.models.tokenizer`: the real CLIP BPE tokenizer, shipped with the package.
- :mod:`~nbhelpers.models.schedulers`: swap a pipeline's sampler by a short name.
"""
