"""Small display helpers the notebooks share: which model is loaded, and bar charts of measured figures."""

from __future__ import annotations

from collections.abc import Sequence

from diffusers import DiffusionPipeline

from nbhelpers.loading import load_info


def model_banner(pipe: DiffusionPipeline) -> str:
    """One Markdown paragraph saying which model, device and dtype a pipeline uses.

    For the offline tiny stand-ins it says loudly that the weights are random and the pictures are not
    results of the real model.
    """
    info = load_info(pipe)
    if info is None:
        return f"**Model:** `{type(pipe).__name__}` (not loaded through nbhelpers)"
    text = (
        f"**Model:** `{info.label}` from `{info.source}` on **{info.device}** in `{str(info.dtype).split('.')[-1]}`"
    )
    if info.memory_savers:
        text += f"; memory savers: {', '.join(info.memory_savers)}"
    if info.tiny:
        text += (
            "\n\n> ⚠️ **Tiny offline mode**: random weights, same architecture family and code path as the real "
            "model. The images below are noise, not model results. Unset `NBHELPERS_TINY` / set `TINY = False` "
            "with hub access for the real model."
        )
    return text


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
        ax.annotate(annotate_format.format(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    return ax
