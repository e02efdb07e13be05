"""What a learner can expect before running a notebook: download sizes and estimated times on a free T4.

No T4 was available to measure these, so they are **computed estimates**, labelled as such wherever shown:

- download size = parameters of each component the loader fetches x bytes per parameter of the files a GPU load
  downloads (2 where the repo has half-precision files: SD v1.x's fp16 variant, DeciDiffusion's fp16-only files;
  4 where it has only fp32 files: small-stable-diffusion), counted on PyTorch's meta device from the published
  configs;
- seconds per 512x512 image on a T4 = UNet FLOPs per guided step x steps / the T4's effective throughput in the
  published SD v1.5 T4 timing: 7.83 s per image at 50 steps, 512 px, fp16, batch 1, PyTorch 2.0 with xformers
  (alexeigor/sd-benchmarks, https://github.com/alexeigor/sd-benchmarks). That figure is the whole pipeline call,
  so the text encoder, VAE decode and safety checker are in it, counted as if they scaled with the UNet's work;
  SD v1.5 at 50 steps reproduces it exactly, other models and step counts are scaled by their UNet FLOPs;
- a DreamBooth training step costs about three UNet forward passes of one image (forward + backward).
"""

from __future__ import annotations

from nbhelpers.catalog import get_spec

#: Published SD v1.5 latency on a T4 (16 GB), whole pipeline call: fp16, 512 px, batch 1, PyTorch 2.0 with xformers
#: (alexeigor/sd-benchmarks README), at the 50 steps and guidance 7.5 of that repository's SD v1.5 settings
#: (PyTorch/test_pt.py).
T4_SD15_SECONDS_50_STEPS = 7.83
#: Where :data:`T4_SD15_SECONDS_50_STEPS` was published, for the tables that show the estimates.
T4_TIMING_SOURCE = "https://github.com/alexeigor/sd-benchmarks"
#: Download speed assumed for a hosted notebook pulling from the Hugging Face hub, bytes per second.
ASSUMED_DOWNLOAD_BYTES_PER_SECOND = 50e6
#: Components the loader downloads for every catalog model besides its UNet (parameters, counted from the
#: configs in nbhelpers.models.random_weights; tests/tutorials/test_expectations.py recounts them).
TEXT_ENCODER_PARAMS = 123_060_480
VAE_PARAMS = 83_653_863
SAFETY_CHECKER_PARAMS = 303_981_588
#: FLOPs of one guided UNet step at 512x512 (batch 2 with guidance), in GFLOP, counted by
#: ``nbhelpers.perf.flops.model_step_flops`` (kept here because counting takes seconds per model).
GUIDED_STEP_GFLOP = {"sd-v1-4": 1606.5, "sd-v1-5": 1606.5, "deci-v1": 1228.6, "small-sd-v0": 1046.0}


def model_card_url(name: str) -> str:
    """The Hugging Face model card of catalog model ``name``."""
    return f"https://huggingface.co/{get_spec(name).hub_id}"


def download_bytes(name: str, *, bytes_per_param: int | None = None, safety_checker: bool = True) -> int:
    """Bytes of weights ``load_pipeline(name)`` fetches on a GPU: UNet, text encoder, VAE and (optionally) safety
    checker, at ``bytes_per_param`` (default: the repo's files, 2 with half-precision files, 4 with fp32 only)."""
    spec = get_spec(name)
    params = spec.unet_params + TEXT_ENCODER_PARAMS + VAE_PARAMS
    if safety_checker:
        params += SAFETY_CHECKER_PARAMS
    return params * (bytes_per_param or spec.download_bytes_per_parameter)


def t4_effective_flops() -> float:
    """Estimated sustained FLOP/s of a T4 in fp16 diffusion: SD v1.5's UNet work at 50 steps over the published T4
    time of the whole image (:data:`T4_SD15_SECONDS_50_STEPS`)."""
    return _step_flops("sd-v1-5") * 50 / T4_SD15_SECONDS_50_STEPS


def _step_flops(name: str) -> float:
    return GUIDED_STEP_GFLOP[get_spec(name).name] * 1e9


def t4_seconds_per_image(name: str, steps: int | None = None) -> float:
    """Estimated seconds per 512x512 image on a T4 in fp16, at ``steps`` (default: the model's): the published SD
    v1.5 T4 time scaled by the model's UNet work."""
    steps = steps or get_spec(name).num_inference_steps
    return _step_flops(name) * steps / t4_effective_flops()


def t4_training_seconds(name: str, steps: int) -> float:
    """Estimated seconds for ``steps`` DreamBooth steps of batch 1 at 512 px on a T4 (3 forward passes each).

    A lower bound: mixed-precision bookkeeping, the optimizer and data loading come on top.
    """
    one_image_forward = _step_flops(name) / 2  # model_step_flops counts the guided batch of two
    return 3 * one_image_forward * steps / t4_effective_flops()


def expectation_rows(models: list[str]) -> list[dict[str, object]]:
    """One row per model: model card, licence, estimated download (GB, in the precision of its files) and download
    time, T4 seconds per image (estimated, with the published SD v1.5 T4 figure it is scaled from)."""
    rows: list[dict[str, object]] = []
    for name in models:
        size = download_bytes(name)
        spec = get_spec(name)
        rows.append(
            {
                "model": name,
                "model card": model_card_url(name),
                "licence (weights)": spec.licence,
                "files": "fp16" if spec.download_bytes_per_parameter == 2 else "fp32 only",
                "download (GB, estimate)": round(size / 1e9, 2),
                "download time at 50 MB/s (s, estimate)": round(size / ASSUMED_DOWNLOAD_BYTES_PER_SECOND),
                "steps": spec.num_inference_steps,
                "T4 seconds per 512px image (estimate)": round(t4_seconds_per_image(name), 1),
            }
        )
    return rows


def estimate_note() -> str:
    """Where the table's estimates come from, in one paragraph to print under it."""
    return (
        "Estimates, not measurements. Downloads: parameters counted from the published configs x 2 bytes (fp16 "
        "files) or 4 (fp32 only). T4 seconds: the published SD v1.5 time on a T4, "
        f"{T4_SD15_SECONDS_50_STEPS} s per 512 px image at 50 steps (fp16, PyTorch 2.0 with xformers, "
        f"{T4_TIMING_SOURCE}), scaled by each model's UNet FLOPs per step and its steps."
    )


def total_download_gb(models: list[str]) -> float:
    """Estimated gigabytes ``load_pipeline`` downloads for all of ``models`` on a GPU (each once)."""
    return sum(download_bytes(name) for name in dict.fromkeys(models)) / 1e9
