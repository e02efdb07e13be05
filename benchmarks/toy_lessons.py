"""Measure what the shipped toy "shapes" models teach, and save it as the record docs and tests read.

Each notebook lesson that runs offline on a toy model has a number behind it: how often the pictures show what
the prompt says at each guidance scale (notebook 01), where the shape word's attention falls (notebook 05), and
whether DreamBooth teaches the SD-style toy a new shape (notebook 03). This script measures them all with the
library's own readers (``nbhelpers.toy.evaluate``) and writes ``benchmarks/results/toy_lessons.json``:

    python benchmarks/toy_lessons.py                      # everything (about 10 minutes on 2 CPU cores)
    python benchmarks/toy_lessons.py --skip-dreambooth    # the accuracy and attention figures only

``docs/stand-ins.md`` is rendered from this record and the models' ``training.json`` (``python -m
nbhelpers.tutorials.docs``), and ``tests/toy/test_toy_lessons.py`` takes its bounds from it, so a retrained model
only needs this script run again.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nbhelpers.atomic import write_json_atomic
from nbhelpers.environment import environment_report
from nbhelpers.loading import load_pipeline
from nbhelpers.toy.evaluate import ATTENTION_VIEWS, score_pipeline, shape_likeness, shape_word_attention
from nbhelpers.toy.pipelines import TOY_MODEL_NAMES
from nbhelpers.toy.shapes import COLOURS, SHAPES, Scene

RECORD = Path(__file__).parent / "results" / "toy_lessons.json"
#: The catalog entry each toy model stands in for.
STANDS_IN_FOR = {"sd": "sd-v1-5", "deci": "deci-v1"}
GUIDANCE_SCALES = (1.0, 2.0, 3.0, 5.0, 7.5, 12.0)
SEEDS = (0, 1)
STEPS = 20
#: The DreamBooth lesson: six drawn red stars, full fine-tuning of the SD-style toy (LoRA does not teach a model
#: this small the star; see docs/stand-ins.md).
DREAMBOOTH = {
    "prompt": "a red sks on a white background",
    "seeds": [0, 1, 2, 3],
    "learning_rate": 2e-4,
    "max_train_steps": 600,
    "use_lora": False,
}


def _toy_pipeline(kind: str):
    return load_pipeline(
        STANDS_IN_FOR[kind], stand_in="toy", device="cpu", safety_checker=False, memory_savers="off", progress=False
    )


def measure_accuracy(kind: str) -> dict[str, dict[str, float]]:
    """Share of the 36 captions x 2 seeds whose colour, shape, background and all three are right, by guidance."""
    pipe = _toy_pipeline(kind)
    with torch.no_grad():
        return {
            f"{g:g}": score_pipeline(pipe, seeds=SEEDS, guidance_scale=g, num_inference_steps=STEPS)
            for g in GUIDANCE_SCALES
        }


def measure_attention(kind: str) -> dict[str, dict[str, float]]:
    """The shape word's attention inside the drawn shape over the shape's area share (1: no preference), per
    layer view, mean over every shape and colour on gray x 2 seeds at guidance 5; pictures with no shape skipped."""
    pipe = _toy_pipeline(kind)
    ratios: dict[str, list[float]] = {view: [] for view in ATTENTION_VIEWS}
    for shape in SHAPES:
        for colour in COLOURS:
            for seed in SEEDS:
                try:
                    measured, _, _ = shape_word_attention(
                        pipe, Scene(shape=shape, colour=colour, background="gray"), seed=seed
                    )
                except ValueError:  # no shape drawn: nothing to measure
                    continue
                for view, ratio in measured.items():
                    ratios[view].append(ratio)
    return {
        view: {
            "mean": float(np.mean(values)),
            "share_above_1": float(np.mean([v > 1 for v in values])),
            "pictures": len(values),
        }
        for view, values in ratios.items()
    }


def measure_dreambooth() -> dict[str, object]:
    """Likeness to a star of the DreamBooth prompt's pictures before and after full fine-tuning on six stars."""
    from nbhelpers.dreambooth import DreamBoothTrainer
    from nbhelpers.dreambooth.config import DreamBoothConfig
    from nbhelpers.dreambooth.data import make_toy_subject

    pipe = load_pipeline(
        "sd-v1-4", stand_in="toy", device="cpu", safety_checker=False, memory_savers="off", progress=False
    )
    prompt, seeds = DREAMBOOTH["prompt"], DREAMBOOTH["seeds"]

    def likeness() -> list[float]:
        return [
            shape_likeness(pipe(prompt, height=64, width=64, generator=torch.Generator().manual_seed(s)).images[0])
            for s in seeds
        ]

    before = likeness()
    with tempfile.TemporaryDirectory() as work:
        config = DreamBoothConfig(
            instance_data_dir=str(make_toy_subject(Path(work) / "stars")),
            output_dir=str(Path(work) / "run"),
            model="sd-v1-4",
            stand_in="toy",
            instance_prompt=prompt,
            identifier="sks",
            resolution=64,
            use_lora=DREAMBOOTH["use_lora"],
            learning_rate=DREAMBOOTH["learning_rate"],
            max_train_steps=DREAMBOOTH["max_train_steps"],
            memory="off",
            mixed_precision="no",
            checkpointing_steps=DREAMBOOTH["max_train_steps"],
        )
        DreamBoothTrainer(config, pipe=pipe).train()
    pipe.to(dtype=torch.float32)
    after = likeness()
    return {**DREAMBOOTH, "before": before, "after": after}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-dreambooth", action="store_true", help="Keep the record's DreamBooth figures.")
    parser.add_argument("--out", type=Path, default=RECORD, help="Where to write the record.")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the figures depend (slightly) on the thread count: record it and keep it fixed

    started = time.perf_counter()
    record: dict[str, object] = {
        "how": (
            f"benchmarks/toy_lessons.py: 36 captions x seeds {list(SEEDS)}, {STEPS} DDIM steps, 64 px, CPU, fp32 "
            "from the shipped fp16 files, one torch thread; pictures read back by nbhelpers.toy.evaluate"
        ),
        "environment": environment_report().as_dict(),
        "steps": STEPS,
        "seeds": list(SEEDS),
        "models": {},
    }
    models: dict[str, dict[str, object]] = {}
    for kind in sorted(TOY_MODEL_NAMES):
        accuracy = measure_accuracy(kind)
        best = max(accuracy, key=lambda g: accuracy[g]["all"])
        models[kind] = {
            "folder": TOY_MODEL_NAMES[kind],
            "stands_in_for": STANDS_IN_FOR[kind],
            "accuracy_by_guidance": accuracy,
            "best_guidance": float(best),
            "attention_ratio": measure_attention(kind),
        }
        print(kind, "best guidance", best, accuracy[best], models[kind]["attention_ratio"], flush=True)
    if not args.skip_dreambooth:
        models["sd"]["dreambooth_star"] = measure_dreambooth()
        print("dreambooth", models["sd"]["dreambooth_star"], flush=True)
    elif args.out.is_file():
        import json

        previous = json.loads(args.out.read_text(encoding="utf-8"))
        if "dreambooth_star" in previous["models"].get("sd", {}):
            models["sd"]["dreambooth_star"] = previous["models"]["sd"]["dreambooth_star"]
    record["models"] = models
    record["minutes"] = round((time.perf_counter() - started) / 60, 2)
    write_json_atomic(args.out, record)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
