"""Small display helpers the notebooks share: which model is loaded, charts and picture tables of measured figures,
the text-to-image pipeline as a diagram, figures read from the project's records (``benchmarks/results/``), and
notebook 03's estimated T4 times."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from nbhelpers.images import to_uint8_array
from nbhelpers.loading import load_info
from nbhelpers.stand_in import STAND_IN_VARIABLE
from nbhelpers.tutorials.docs import PROJECT_ROOT
from nbhelpers.tutorials.expectations import (
    estimate_note,
    expectation_rows,
    t4_seconds_per_image,
    t4_training_seconds,
    total_download_gb,
)

# matplotlib (slow to import) and IPython and pandas (Jupyter and the optional [notebooks] extra) are imported
# inside the helpers that draw or display: scripts and tests use the others without them.

#: The toy models' names in the tables below, by their key in ``toy_lessons.json``.
TOY_NAMES = {"deci": "DeciDiffusion-style toy", "sd": "SD-style toy"}


def model_banner(pipe: DiffusionPipeline) -> str:
    """One Markdown paragraph saying which model, device and dtype a pipeline uses.

    For the offline tiny stand-ins it says loudly that the weights are random and the pictures are not
    results of the real model.
    """
    info = load_info(pipe)
    if info is None:
        return f"**Model:** `{type(pipe).__name__}` (not loaded through nbhelpers)"
    text = f"**Model:** `{info.label}` from `{info.source}` on **{info.device}** in `{str(info.dtype).split('.')[-1]}`"
    if info.memory_savers:
        text += f"; memory savers: {', '.join(info.memory_savers)}"
    if info.stand_in == "tiny":
        text += (
            "\n\n> ⚠️ **Tiny stand-in**: random weights, same architecture family and code path as the real "
            "model. The images below are noise, not model results. Set `STAND_IN = None` (and unset "
            f"`{STAND_IN_VARIABLE}`) with hub access for the real model."
        )
    if info.stand_in == "toy":
        text += (
            "\n\n> 🧸 **Toy model (shapes)**: a small model trained on 64 px pictures of one coloured circle, square "
            "or triangle, in the same pipeline layout and code path as the real model. It knows prompts like "
            '"a red circle on a white background" and nothing else, and gets them only partly right (measured in '
            "docs/stand-ins.md); its pictures are not the real model's. `STAND_IN = None` with hub access loads the "
            "real model."
        )
    return text


def with_mark(text: str, mark: str) -> str:
    """``text`` with ``(mark)`` appended when there is one: for titles and captions of pictures and charts made
    from a stand-in (``stand_in_mark(stand_in)``: "tiny, random weights" or "toy model (shapes)"), so nobody
    takes them for the real model's results."""
    return f"{text} ({mark})" if mark else text


def show_model_banner(pipe: DiffusionPipeline) -> None:
    """Display :func:`model_banner` as Markdown in a notebook."""
    from IPython.display import Markdown, display

    display(Markdown(model_banner(pipe)))


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    ylabel: str,
    annotate_format: str = "{:.2f}",
    ax=None,
):
    """Draw a labelled bar chart (matplotlib) with each bar's value written on it; returns the axes."""
    import matplotlib.pyplot as plt

    if len(labels) != len(values):
        raise ValueError(f"Got {len(labels)} labels for {len(values)} values.")
    if ax is None:
        # constrained layout keeps a title that wraps onto two lines inside the figure
        _, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels)), 3.2), layout="constrained")
    bars = ax.bar([str(label) for label in labels], values, color="tab:blue")
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(
            annotate_format.format(value),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_title(wrap_to_axes(title, ax))
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    return ax


def wrap_to_axes(title: str, ax) -> str:
    """``title`` broken into lines no wider than ``ax`` (a long marked title otherwise runs off its figure)."""
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    points = FontProperties(size=rcParams["axes.titlesize"]).get_size_in_points()
    width_points = ax.get_position().width * ax.figure.get_figwidth() * 72
    # An average character of the default sans-serif font is about 0.55 em wide; 0.6 leaves a margin.
    return textwrap.fill(title, width=max(12, int(width_points / (0.6 * points))))


def gpu_advice() -> str:
    """What this machine's accelerator means for the tutorials, and what to do without a GPU."""

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gib = props.total_memory / 2**30
        text = f"GPU: {props.name} with {gib:.1f} GiB: ready."
        if gib < 8:
            text += " Below 8 GiB nbhelpers turns on attention/VAE slicing (and CPU offload below 5 GiB) by itself."
        return text
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "Apple GPU (MPS): ready, slower than a CUDA GPU."
    return (
        "No GPU found. On Colab: Runtime > Change runtime type > T4 GPU, then run the notebook again from the top. "
        "On Paperspace: start the notebook on a GPU machine. Without a GPU everything still runs: offline on the "
        'toy stand-in (STAND_IN = "toy", or ' + STAND_IN_VARIABLE + "=toy) in minutes, or with the real models at "
        "minutes per image."
    )


def show_what_to_expect(models: Sequence[str]) -> None:
    """Print :func:`gpu_advice` and display, per model, its model card, licence, download size and T4 time
    (estimates), the total download of several models, and where the estimates come from."""
    import pandas as pd
    from IPython.display import display

    print(gpu_advice())
    display(pd.DataFrame(expectation_rows(list(models))).set_index("model"))
    if len(set(models)) > 1:
        print(f"Downloads in all, each model once: about {total_download_gb(list(models)):.1f} GB (estimate).")
    print(textwrap.fill(estimate_note(), 110))


def image_table(
    rows: Sequence[Sequence[Any]],
    *,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    captions: Sequence[Sequence[str]] | None = None,
    title: str = "",
    cell_inches: float = 1.8,
):
    """Pictures in a labelled table (matplotlib): one row per ``row_labels`` entry (written on the left), one column
    per ``column_labels`` entry (written on top), and an optional caption under each picture (e.g. its seconds).

    ``rows[r][c]`` is a PIL image, an ``H x W x 3`` array or ``None`` (an empty cell, marked "none"). Returns the
    figure; ``plt.show()`` displays it.
    """
    import matplotlib.pyplot as plt

    if len(rows) != len(row_labels) or any(len(row) != len(column_labels) for row in rows):
        raise ValueError(
            f"Got {len(rows)} rows of {[len(row) for row in rows]} pictures for {len(row_labels)} row labels and "
            f"{len(column_labels)} column labels; give one label per row and per column."
        )
    if captions is not None and [len(c) for c in captions] != [len(row) for row in rows]:
        raise ValueError("Give one caption per picture (captions has the shape of rows), or none.")
    figure, axes = plt.subplots(
        len(rows),
        len(column_labels),
        figsize=(cell_inches * len(column_labels) + 0.8, (cell_inches + 0.45) * len(rows) + (0.5 if title else 0.1)),
        squeeze=False,
    )
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if picture is None:
                ax.text(0.5, 0.5, "none", ha="center", va="center", color="gray", transform=ax.transAxes)
            else:
                ax.imshow(to_uint8_array(picture))
            if r == 0:
                ax.set_title(column_labels[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=9)
            if captions is not None:
                ax.set_xlabel(captions[r][c], fontsize=8)
    if title:
        figure.suptitle(textwrap.fill(title, width=max(20, int(12 * figure.get_figwidth()))), fontsize=10)
    figure.tight_layout()
    return figure


#: The boxes of :func:`pipeline_diagram`: (x, y, text, colour), x and y the centre in the diagram's units.
_DIAGRAM_BOXES = {
    "prompt": (1.3, 4.6, 'prompt\n"a big owl with\nbright eyes"', "#f2f2f2"),
    "tokenizer": (5.0, 4.6, "tokenizer\ntext -> 77 token ids", "#dbe9f6"),
    "text_encoder": (9.0, 4.6, "text encoder (CLIP)\n77 ids -> 77 x 768\nnumbers", "#dbe9f6"),
    "noise": (1.3, 1.6, "random noise\nlatent 4 x 64 x 64\n(from the seed)", "#f2f2f2"),
    "unet": (5.0, 1.6, "UNet\npredicts the noise (SD)\nor v (DeciDiffusion)", "#fde2c8"),
    "scheduler": (9.0, 1.6, "scheduler\nturns it into a\nless noisy latent", "#fde2c8"),
    "vae": (13.0, 1.6, "VAE decoder\nlatent 4 x 64 x 64\n-> 3 x 512 x 512 px", "#d9f0d3"),
    "image": (13.0, 4.6, "picture", "#f2f2f2"),
}


def pipeline_diagram(ax=None):
    """Draw a text-to-image latent diffusion pipeline (SD v1.x, DeciDiffusion) as labelled boxes and arrows:
    prompt -> tokenizer -> text encoder, which conditions the UNet; noise -> UNet <-> scheduler, repeated for every
    step -> VAE decoder -> picture. Sizes are those of a 512 px picture. Returns the axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if ax is None:
        _, ax = plt.subplots(figsize=(13, 5.2))
    width, height = 2.5, 1.25
    for x, y, text, colour in _DIAGRAM_BOXES.values():
        ax.add_patch(
            FancyBboxPatch(
                (x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.08", fc=colour, ec="#555555"
            )
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=9)

    def arrow(start: tuple[float, float], end: tuple[float, float], label: str = "", **style: Any) -> None:
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="#333333", **style))
        if label:
            ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.25, label, ha="center", fontsize=8)

    box = {name: (x, y) for name, (x, y, _, _) in _DIAGRAM_BOXES.items()}
    half = width / 2 + 0.1
    arrow((box["prompt"][0] + half, 4.6), (box["tokenizer"][0] - half, 4.6))
    arrow((box["tokenizer"][0] + half, 4.6), (box["text_encoder"][0] - half, 4.6))
    arrow((box["text_encoder"][0] - 0.6, 4.6 - height / 2 - 0.1), (box["unet"][0] + 0.6, 1.6 + height / 2 + 0.1))
    ax.text(7.4, 3.1, "the text steers\nevery step", ha="left", fontsize=8, style="italic")
    arrow((box["noise"][0] + half, 1.6), (box["unet"][0] - half, 1.6))
    arrow((box["unet"][0] + half, 1.6), (box["scheduler"][0] - half, 1.6), "prediction")
    arrow(
        (box["scheduler"][0] - 0.4, 1.6 - height / 2 - 0.1),
        (box["unet"][0] + 0.4, 1.6 - height / 2 - 0.1),
        connectionstyle="arc3,rad=-0.35",
    )
    ax.text(7.0, -0.15, "repeated once per step (30 for DeciDiffusion, 50 for SD v1.x)", ha="center", fontsize=8)
    arrow((box["scheduler"][0] + half, 1.6), (box["vae"][0] - half, 1.6), "last latent")
    arrow((box["vae"][0], 1.6 + height / 2 + 0.1), (box["image"][0], 4.6 - height / 2 - 0.1))
    ax.set_xlim(-0.2, 14.5)
    ax.set_ylim(-0.5, 5.5)
    ax.set_axis_off()
    ax.set_title("A text-to-image latent diffusion pipeline (sizes for a 512 px picture)", fontsize=11)
    return ax


def toy_guidance_table(record_path: str | Path | None = None) -> tuple[str, list[dict[str, str]]] | None:
    """The toy models' measured prompt adherence by guidance scale, from ``benchmarks/results/toy_lessons.json``
    (written by ``benchmarks/toy_lessons.py``): how it was measured, and one row per guidance scale with the share
    of pictures that get colour, shape and background right (and shape alone) for each toy model.

    Returns ``None`` when there is no record (nbhelpers installed without the repository's ``benchmarks/``).
    """
    record = project_record("toy_lessons.json", record_path)
    if record is None:
        return None
    names = TOY_NAMES
    models = {kind: record["models"][kind] for kind in names}
    scales = sorted({float(g) for m in models.values() for g in m["accuracy_by_guidance"]})
    rows = []
    for scale in scales:
        row = {"guidance scale": f"{scale:g}"}
        for kind, model in models.items():
            measured = model["accuracy_by_guidance"].get(f"{scale:g}")
            best = " (best)" if float(model["best_guidance"]) == scale else ""
            row[f"{names[kind]}: all three right"] = f"{100 * measured['all']:.0f}%{best}" if measured else "-"
            row[f"{names[kind]}: shape right"] = f"{100 * measured['shape']:.0f}%" if measured else "-"
        rows.append(row)
    return record["how"], rows


def project_record(file_name: str, record_path: str | Path | None = None) -> dict[str, Any] | None:
    """The record ``benchmarks/results/<file_name>`` of the project's repository (or ``record_path``), parsed;
    ``None`` when it is not there (nbhelpers installed without the repository's ``benchmarks/``)."""

    path = Path(record_path) if record_path is not None else PROJECT_ROOT / "benchmarks" / "results" / file_name
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def toy_dreambooth_table(record_path: str | Path | None = None) -> tuple[str, list[dict[str, str]]] | None:
    """The toy DreamBooth lesson as ``benchmarks/toy_lessons.py`` recorded it: how it was trained, and one row per
    seed with the likeness to a star (``nbhelpers.toy.evaluate.shape_likeness``) before and after training.

    Returns ``None`` when there is no record or it holds no DreamBooth run.
    """
    record = project_record("toy_lessons.json", record_path)
    if record is None:
        return None
    star = record["models"]["sd"].get("dreambooth_star")
    if not star:
        return None
    mode = "LoRA" if star["use_lora"] else "full fine-tuning"
    how = (
        f"{TOY_NAMES['sd']}, {mode}, {star['max_train_steps']} steps at learning rate {star['learning_rate']:g}, "
        f"'{star['prompt']}'; {record['environment']['device'].upper()}, benchmarks/toy_lessons.py"
    )
    rows = [
        {"seed": str(seed), "likeness before": f"{before:.2f}", "likeness after": f"{after:.2f}"}
        for seed, before, after in zip(star["seeds"], star["before"], star["after"], strict=True)
    ]
    rows.append(
        {
            "seed": "mean",
            "likeness before": f"{sum(star['before']) / len(star['before']):.2f}",
            "likeness after": f"{sum(star['after']) / len(star['after']):.2f}",
        }
    )
    return how, rows


def toy_attention_table(record_path: str | Path | None = None) -> tuple[str, list[dict[str, str]]] | None:
    """Where the toy models' shape word attends, from ``benchmarks/results/toy_lessons.json``: per toy model and
    group of layers (DAAM's default, the coarsest maps), the mean of (the word's attention inside the drawn shape /
    the shape's area share), the share of pictures above 1 and how many pictures were read.

    Returns ``None`` when there is no record.
    """
    record = project_record("toy_lessons.json", record_path)
    if record is None:
        return None
    groups = {"default": "DAAM's default", "coarsest": "coarsest maps, mid-block included"}
    rows = []
    for kind, name in TOY_NAMES.items():
        for group, label in groups.items():
            ratio = record["models"][kind]["attention_ratio"][group]
            rows.append(
                {
                    "toy model": name,
                    "layers": label,
                    "attention inside / area share (mean)": f"{ratio['mean']:.2f}",
                    "pictures above 1": f"{100 * ratio['share_above_1']:.0f}%",
                    "pictures": str(ratio["pictures"]),
                }
            )
    return f"{record['environment']['device'].upper()}, {record['steps']} steps, benchmarks/toy_lessons.py", rows


def dreambooth_t4_rows(
    model: str,
    *,
    steps: int,
    pictures: int,
    prior_preservation: bool,
    compare_prior_preservation: bool,
    class_images: int,
) -> list[dict[str, object]]:
    """Estimated seconds on a T4 of notebook 03's parts, computed by :mod:`nbhelpers.tutorials.expectations`:
    drawing ``pictures`` at 512 px, the class images prior preservation generates, and each training run
    (``steps`` steps of one subject photo, plus one class picture with prior preservation). Training times are
    lower bounds (the optimizer and mixed-precision bookkeeping come on top). The last row is the total.
    """

    image_s = t4_seconds_per_image(model)
    runs = [prior_preservation] + ([not prior_preservation] if compare_prior_preservation else [])
    parts: list[tuple[str, float]] = [(f"draw {pictures} pictures, 512 px", pictures * image_s)]
    if any(runs):
        parts.append((f"generate {class_images} class images, 512 px (prior preservation)", class_images * image_s))
    for with_prior in runs:
        label = f"train {steps} steps, {'with' if with_prior else 'without'} prior preservation (lower bound)"
        parts.append((label, t4_training_seconds(model, steps * (2 if with_prior else 1))))
    parts.append(("total", sum(seconds for _, seconds in parts)))
    return [{"part": part, "T4 minutes (estimate)": round(seconds / 60, 1)} for part, seconds in parts]
