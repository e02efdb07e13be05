"""Small display helpers the notebooks share: which model is loaded, and bar charts of measured figures."""

from __future__ import annotations

from collections.abc import Sequence

from diffusers import DiffusionPipeline

from nbhelpers.loading import load_info
from nbhelpers.stand_in import STAND_IN_VARIABLE


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
        _, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels)), 3.2))
    bars = ax.bar([str(label) for label in labels], values, color="tab:blue")
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(
            annotate_format.format(value),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    return ax


def gpu_advice() -> str:
    """What this machine's accelerator means for the tutorials, and what to do without a GPU."""
    import torch

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
    """Print :func:`gpu_advice` and display, per model, its model card, download size and T4 time (estimates)."""
    import pandas as pd
    from IPython.display import display

    from nbhelpers.tutorials.expectations import expectation_rows

    print(gpu_advice())
    display(pd.DataFrame(expectation_rows(list(models))).set_index("model"))
