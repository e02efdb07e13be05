"""Seconds per DreamBooth training step and peak GPU memory, LoRA and full fine-tuning.

Each mode builds the trainer of ``nbhelpers.dreambooth`` on SD v1.4's architecture, feeds it one instance
image plus one prior-preservation (class) image per step, and times ``compute_loss`` + ``optimizer_step``
with ``nbhelpers.perf.timing.measure`` (device synchronised, warmed up, median of the repeats). Peak memory is
everything the process held on the GPU during the warm-up and timed steps (``torch.cuda.max_memory_allocated``):
UNet, text encoder, VAE, gradients, optimizer state, activations. It is printed next to the memory plan's
estimate (``nbhelpers.dreambooth.memory_plan``) with their ratio: the plan's target is within 15%.

    python benchmarks/dreambooth_step.py --device cuda        # full-size SD v1.4 architecture, random weights
    python benchmarks/dreambooth_step.py --tiny               # tiny model on the CPU: a smoke run of the script

Full size needs a CUDA GPU. Weights are random (the hub is out of reach here): step time and memory do not
depend on the weights' values, the loss does, so no loss is reported.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from nbhelpers.atomic import write_json_atomic
from nbhelpers.device import peak_memory_bytes, reset_peak_memory
from nbhelpers.dreambooth.config import DreamBoothConfig
from nbhelpers.dreambooth.data import make_synthetic_subject
from nbhelpers.dreambooth.trainer import DreamBoothTrainer
from nbhelpers.environment import environment_report
from nbhelpers.perf.timing import measure

_FIXED = {"memory": "off", "cache_text_embeddings": False, "gradient_checkpointing": False, "use_8bit_adam": False}
MODES = {
    "lora": _FIXED | {"use_lora": True, "mixed_precision": "fp16"},
    "lora-gc": _FIXED | {"use_lora": True, "mixed_precision": "fp16", "gradient_checkpointing": True},
    "full-gc-8bit": _FIXED
    | {"use_lora": False, "mixed_precision": "fp16", "gradient_checkpointing": True, "use_8bit_adam": True},
    # what a T4 without bitsandbytes runs (the GPU suite's machine has none)
    "full-gc": _FIXED | {"use_lora": False, "mixed_precision": "fp16", "gradient_checkpointing": True},
    "full": _FIXED | {"use_lora": False, "mixed_precision": "fp16"},
}


def _pipeline(tiny: bool, device: str):
    if tiny:
        from nbhelpers.loading import load_pipeline

        return load_pipeline(
            "sd-v1-4",
            stand_in="tiny",
            device=device,
            dtype=torch.float32,
            safety_checker=False,
            memory_savers="off",
            progress=False,
        )
    from nbhelpers.models.random_weights import build_random_pipeline

    return build_random_pipeline("sd-v1-4", device=device, dtype=torch.float32)


def measure_mode(mode: str, *, tiny: bool, device: str, resolution: int, repeats: int, work: Path) -> dict:
    """Median seconds per step and peak memory of one mode."""
    settings = dict(MODES[mode])
    if device == "cpu":
        settings.update(mixed_precision="no", use_8bit_adam=False)
    instance = make_synthetic_subject(work / "instance", count=2, size=resolution)
    classes = make_synthetic_subject(work / "class", count=1, size=resolution, seed=1)
    config = DreamBoothConfig(
        str(instance),
        str(work / mode),
        stand_in="tiny" if tiny else "none",
        resolution=resolution,
        with_prior_preservation=True,
        class_data_dir=str(classes),
        num_class_images=1,
        train_batch_size=1,
        **settings,
    )
    trainer = DreamBoothTrainer(config, pipe=_pipeline(tiny, device))
    batch = next(iter(trainer.dataloader))
    trainer.unet.train()
    reset_peak_memory(device)  # the training steps' peak, which the plan estimates (not the fp32 load before)

    def step() -> None:
        with trainer.accelerator.accumulate(trainer.unet):
            trainer.optimizer_step(trainer.compute_loss(batch))

    timing = measure(step, warmup=3, repeats=repeats, device=device)
    trained = sum(p.numel() for p in trainer.trainable_parameters())
    optimizer = type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer)
    peak = peak_memory_bytes(device)
    expected = trainer.plan.estimate.peak
    return {
        "mode": mode,
        "settings": settings,
        "trained_parameters": trained,
        "optimizer": optimizer.__name__,
        "batch": f"{batch['num_instance']} instance + {batch['pixels'].shape[0] - batch['num_instance']} class",
        "resolution": resolution,
        "step_median_s": timing.median_s,
        "step_min_s": timing.min_s,
        "first_step_s": timing.first_call_s,
        "peak_memory_bytes": peak,
        "plan_expected_peak_bytes": expected,
        "plan_estimate": trainer.plan.estimate.describe(),
        "measured_over_expected": peak / expected if peak else None,
        "weights": "tiny, random" if tiny else "full-size SD v1.4 architecture, random",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke run)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--resolution", type=int, default=None, help="default 512 full size, 64 tiny")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/dreambooth_step.json")
    args = parser.parse_args()
    if not args.tiny and not args.device.startswith("cuda"):
        raise SystemExit("Full-size DreamBooth steps need a CUDA GPU (--device cuda); use --tiny for a CPU smoke run.")
    resolution = args.resolution or (64 if args.tiny else 512)
    results = []
    with tempfile.TemporaryDirectory() as work:
        for mode in args.modes:
            try:
                figures = measure_mode(
                    mode,
                    tiny=args.tiny,
                    device=args.device,
                    resolution=resolution,
                    repeats=args.repeats,
                    work=Path(work),
                )
            except torch.cuda.OutOfMemoryError as err:
                figures = {"mode": mode, "error": f"out of memory: {err}".splitlines()[0]}
            results.append(figures)
            if "error" in figures:
                print(f"{mode}: {figures['error']}")
            else:
                peak, expected = figures["peak_memory_bytes"], figures["plan_expected_peak_bytes"]
                memory = f", plan expects {expected / 2**30:.2f} GiB"
                if peak:
                    ratio = figures["measured_over_expected"]
                    verdict = "within 15%" if abs(ratio - 1) <= 0.15 else "OFF BY MORE THAN 15%"
                    memory += f", measured peak {peak / 2**30:.2f} GiB (x{ratio:.2f}, {verdict})"
                print(
                    f"{mode} ({figures['weights']}, {resolution}px, {figures['batch']}, {figures['optimizer']}, "
                    f"{figures['trained_parameters']:,} trained): {figures['step_median_s']:.3f} s/step{memory}"
                )
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    report = {"device": args.device, "environment": environment_report().as_dict(), "results": results}
    out = write_json_atomic(args.out, report)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
