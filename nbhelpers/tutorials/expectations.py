"""What a learner can expect before running a notebook: download sizes and estimated times on a free T4.

No GPU was available to measure these, so they are **computed estimates**, labelled as such wherever shown:

- download size = parameters of each component the loader fetches x bytes per parameter (2 in fp16, the
  variant a GPU loads; 4 on a CPU), counted on PyTorch's meta device from the published configs;
- seconds per 512x512 image on a T4 = UNet FLOPs per guided step x steps / the T4's effective throughput,
  which is the A10's effective throughput in the published SD v1.5 timing (2.95 s for 50 fp16 steps at 512 px,
  DeciDiffusion model card) scaled by the ratio of the two GPUs' fp16 tensor-core peaks (T4 65 TFLOP/s,
  A10 125 TFLOP/s, NVIDIA data sheets). Text encoder, VAE decode and safety checker add a little on top;
- a DreamBooth training step costs about three UNet forward passes of one image (forward + backward).
"""

from __future__ import annotations

from nbhelpers.catalog import get_spec

#: Published SD v1.5 latency on an A10 (fp16, 512 px, 50 steps, batch 1), in seconds (DeciDiffusion model card).
A10_SD15_SECONDS_50_STEPS = 2.95
#: fp16 tensor-core peaks, TFLOP/s (NVIDIA data sheets): the T4/A10 ratio scales the A10 calibration.
T4_FP16_TFLOPS, A10_FP16_TFLOPS = 65.0, 125.0
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


def download_bytes(name: str, *, bytes_per_param: int = 2, safety_checker: bool = True) -> int:
    """Bytes of weights ``load_pipeline(name)`` fetches: UNet, text encoder, VAE and (optionally) safety checker."""
    params = get_spec(name).unet_params + TEXT_ENCODER_PARAMS + VAE_PARAMS
    if safety_checker:
        params += SAFETY_CHECKER_PARAMS
    return params * bytes_per_param


def t4_effective_flops() -> float:
    """Estimated sustained FLOP/s of a T4 in fp16 diffusion, calibrated on the published A10 SD v1.5 timing."""
    a10 = _step_flops("sd-v1-5") * 50 / A10_SD15_SECONDS_50_STEPS
    return a10 * T4_FP16_TFLOPS / A10_FP16_TFLOPS


def _step_flops(name: str) -> float:
    return GUIDED_STEP_GFLOP[get_spec(name).name] * 1e9


def t4_seconds_per_image(name: str, steps: int | None = None) -> float:
    """Estimated seconds per 512x512 image on a T4 in fp16 (UNet only), at ``steps`` (default: the model's)."""
    steps = steps or get_spec(name).num_inference_steps
    return _step_flops(name) * steps / t4_effective_flops()


def t4_training_seconds(name: str, steps: int) -> float:
    """Estimated seconds for ``steps`` DreamBooth steps of batch 1 at 512 px on a T4 (3 forward passes each).

    A lower bound: mixed-precision bookkeeping, the optimizer and data loading come on top.
    """
    one_image_forward = _step_flops(name) / 2  # model_step_flops counts the guided batch of two
    return 3 * one_image_forward * steps / t4_effective_flops()


def expectation_rows(models: list[str]) -> list[dict[str, object]]:
    """One row per model: model card, estimated download (GB, fp16) and download time, T4 seconds per image."""
    rows = []
    for name in models:
        size = download_bytes(name)
        spec = get_spec(name)
        rows.append(
            {
                "model": name,
                "model card": model_card_url(name),
                "download, fp16 (GB, estimate)": round(size / 1e9, 2),
                "download time at 50 MB/s (s, estimate)": round(size / ASSUMED_DOWNLOAD_BYTES_PER_SECOND),
                "steps": spec.num_inference_steps,
                "T4 seconds per 512px image (estimate)": round(t4_seconds_per_image(name), 1),
            }
        )
    return rows
