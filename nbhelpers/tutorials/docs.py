"""Figures in the docs, rendered from the records that measured them, never copied by hand.

A generated block in a Markdown file sits between ``<!-- BEGIN generated: NAME -->`` and ``<!-- END generated:
NAME -->``; :data:`BLOCKS` says which function renders each block from which records:

- ``toy-models``: the toy "shapes" models' table (``docs/stand-ins.md``), from each shipped folder's
  ``training.json`` (written by ``nbhelpers toy-train``) and ``benchmarks/results/toy_lessons.json`` (written by
  ``benchmarks/toy_lessons.py``).

``python -m nbhelpers.tutorials.docs`` rewrites the blocks, ``--check`` only reports stale ones (a test runs it),
so a retrained model or a new measurement reaches the docs by running the producer and then this module.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOCS = PROJECT_ROOT / "docs"
TOY_LESSONS_RECORD = PROJECT_ROOT / "benchmarks" / "results" / "toy_lessons.json"
TOY_MODELS_DIR = PROJECT_ROOT / "nbhelpers" / "toy" / "models"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def _parameters(folder: Path) -> int:
    """Parameters stored in a component folder's safetensors files (read from their headers, no weights)."""
    # Lazy: notebook.py and benchmarks/gpu_table.py import this module for its paths only.
    from safetensors import safe_open

    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, "np") as weights:
            for key in weights.keys():
                count = 1
                for size in weights.get_slice(key).get_shape():
                    count *= size
                total += count
    return total


def _training_minutes(record: dict[str, Any]) -> list[float]:
    """Minutes of each run that made a folder, oldest first. A continued run keeps its first run's record under
    ``continued_from``, and its own ``minutes`` include the earlier runs' (``nbhelpers toy-train`` adds them)."""
    totals = []
    while record:
        totals.append(float(record["minutes"]))
        record = record.get("continued_from") or {}
    totals.reverse()
    return [total - earlier for total, earlier in zip(totals, [0.0, *totals[:-1]], strict=True)]


def _denoiser_steps(record: dict[str, Any]) -> list[int]:
    steps = []
    while record:
        settings = record["settings"]  # toy-train's max_train_steps was unet_steps in earlier records
        steps.append(int(settings.get("max_train_steps", settings.get("unet_steps"))))
        record = record.get("continued_from") or {}
    return list(reversed(steps))


def render_toy_models(lessons_record: Path = TOY_LESSONS_RECORD, models_dir: Path = TOY_MODELS_DIR) -> str:
    """The table of what the two toy models are and measure, from their records."""
    lessons = _read_json(lessons_record)
    kinds = ("sd", "deci")
    folders = {kind: models_dir / lessons["models"][kind]["folder"] for kind in kinds}
    training = {kind: _read_json(folders[kind] / "training.json") for kind in kinds}
    measured = {kind: lessons["models"][kind] for kind in kinds}

    def row(label: str, cells: dict[str, str]) -> str:
        return f"| {label} | {cells['sd']} | {cells['deci']} |"

    def each(fn: Callable[[str], str]) -> dict[str, str]:
        return {kind: fn(kind) for kind in kinds}

    def denoiser(kind: str) -> str:
        sub = "flexible_unet" if kind == "deci" else "unet"
        name = "flexible UNet" if kind == "deci" else "`UNet2DConditionModel`"
        return f"{name}, {_parameters(folders[kind] / sub) / 1e6:.1f}M parameters"

    def best(kind: str) -> dict[str, float]:
        m = measured[kind]
        return m["accuracy_by_guidance"][f"{m['best_guidance']:g}"]

    def unguided(kind: str) -> dict[str, float]:
        return measured[kind]["accuracy_by_guidance"]["1"]

    def word(name: str) -> dict[str, str]:
        return each(lambda k: f"{_percent(best(k)[name])} / {_percent(unguided(k)[name])}")

    def attention(kind: str) -> str:
        ratio = measured[kind]["attention_ratio"]
        return f"{ratio['coarsest']['mean']:.2f} / {ratio['default']['mean']:.2f}"

    def dreambooth(kind: str) -> str:
        star = measured[kind].get("dreambooth_star")
        if not star:
            return "not run"
        mode = "LoRA" if star["use_lora"] else "full fine-tuning"
        before, after = sum(star["before"]) / len(star["before"]), sum(star["after"]) / len(star["after"])
        return f"{mode}, {star['max_train_steps']} steps at {star['learning_rate']:g}: {before:.2f} -> {after:.2f}"

    guidance_curve = each(
        lambda k: ", ".join(f"{g}: {_percent(a['all'])}" for g, a in measured[k]["accuracy_by_guidance"].items())
    )
    lines = [
        "| | SD-style (`shapes-sd`) | DeciDiffusion-style (`shapes-deci`) |",
        "| --- | --- | --- |",
        row("stands in for", each(lambda k: f"`{measured[k]['stands_in_for']}`")),
        row("VAE", each(lambda k: f"{_parameters(folders[k] / 'vae') / 1e6:.2f}M parameters")),
        row("denoiser", each(denoiser)),
        row(
            "denoiser steps at batch 32, per run",
            each(lambda k: " + ".join(f"{s:,}" for s in _denoiser_steps(training[k]))),
        ),
        row(
            "training minutes on the 2-core CI machine, per run (in all)",
            each(
                lambda k: (
                    " + ".join(f"{m:.1f}" for m in _training_minutes(training[k]))
                    + f" ({sum(_training_minutes(training[k])):.1f})"
                )
            ),
        ),
        row("guidance it follows prompts best at", each(lambda k: f"{measured[k]['best_guidance']:g}")),
        row("pictures with the colour right (best guidance / guidance 1)", word("colour")),
        row("... the shape right", word("shape")),
        row("... the background right", word("background")),
        row("... all three right", word("all")),
        row("all three right, by guidance", guidance_curve),
        row("shape word's attention in the shape / its area share (coarsest maps / DAAM's default)", each(attention)),
        row("DreamBooth on 6 stars: likeness to a star (IoU), before -> after", each(dreambooth)),
    ]
    how = lessons["how"]
    return "\n".join(lines) + f"\n\nMeasured by {how}; {lessons['minutes']} minutes.\n"


#: Generated blocks: (file under docs/, block name) -> renderer.
BLOCKS: dict[tuple[str, str], Callable[[], str]] = {
    ("stand-ins.md", "toy-models"): render_toy_models,
}


def _block_pattern(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- BEGIN generated: {re.escape(name)} -->\n)(.*?)(<!-- END generated: {re.escape(name)} -->)", re.S
    )


def replace_block(text: str, name: str, content: str) -> str:
    """``text`` with block ``name``'s content replaced.

    Raises:
        ValueError: when the file has no such block (its markers were edited away).
    """
    pattern = _block_pattern(name)
    if not pattern.search(text):
        raise ValueError(f"No generated block {name!r}: add its BEGIN/END markers back.")
    return pattern.sub(lambda m: m.group(1) + content + m.group(3), text)


def stale_files(docs: Path = DOCS, write: bool = False) -> list[Path]:
    """Docs files whose generated blocks differ from their records (rewritten when ``write``)."""
    stale = []
    for (file, name), render in BLOCKS.items():
        path = docs / file
        text = path.read_text(encoding="utf-8")
        updated = replace_block(text, name, render())
        if updated != text:
            stale.append(path)
            if write:
                path.write_text(updated, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the docs' generated figures from their records.")
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = parser.parse_args(argv)
    stale = stale_files(write=not args.check)
    for path in stale:
        print(("stale: " if args.check else "rewrote ") + str(path.relative_to(PROJECT_ROOT)))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    raise SystemExit(main())
