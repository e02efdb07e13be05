# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
# ---

# %% [markdown]
# # 05 · DAAM: which pixels each word attended to
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/your-org/diffusion-tutorials/blob/main/notebooks/05_daam_heat_maps.ipynb)
#
# DAAM (*Diffusion Attentive Attribution Maps*, Tang et al., ACL 2023) turns the UNet's cross-attention into one
# heat map per prompt word. You will learn to:
#
# - trace a generation with `nbhelpers.daam` (the reference `daam` API: `trace`, `compute_global_heat_map`,
#   `compute_word_heat_map`, `plot_overlay`), on current diffusers, for SD and for DeciDiffusion;
# - compare the same prompt's word maps from SD v1.5 and DeciDiffusion side by side;
# - check a heat map against the truth: offline, on the toy "shapes" models, measure whether the word "circle"
#   attends to the circle they drew, and in which layers (SD-style toy: yes, 1.5x, in its coarsest maps only);
# - plot every word of a prompt at once, and watch attention settle over the denoising steps;
# - trace any image size, and save maps as arrays and pictures.
#
# Tracing records only the cross-attention probabilities of the conditional half of the batch, summed on the
# device as they come, so it costs little on top of generation (see `benchmarks/daam_overhead.py`).

# %%
# Set-up (Colab, Paperspace, a fresh runtime): installs nbhelpers, then what this notebook needs, and says so.
import importlib.util, os, subprocess, sys  # noqa: E401, I001

if importlib.util.find_spec("nbhelpers") is None:  # the project's code: the checkout this notebook is in, or git
    url = os.environ.get("NBHELPERS_REPO_URL", "https://github.com/your-org/diffusion-tutorials")
    source = ".." if os.path.isdir("../nbhelpers") else f"git+{url}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", source], check=True)
from nbhelpers.tutorials.setup import set_up  # noqa: E402

set_up("notebooks")  # this notebook's extras: installs what is missing or too old, or says to restart

# %% tags=["parameters"]
# Papermill parameters
MODELS = ["sd-v1-5", "deci-v1"]
STAND_IN = None  # None: the real models (unless NBHELPERS_STAND_IN says otherwise); "toy" or "tiny": offline
PROMPT = "A big owl with bright shinning eyes sitting on a tree branch"
WORDS = ["owl", "eyes", "branch"]
SEED = 0
STEPS = None  # None: each model's default (50 for SD, 30 for DeciDiffusion)
SIZE = None  # image side in px; None: 512 (64 for the toy stand-in, 128 for the tiny one)
STEP_RANGES = 3  # how many consecutive step ranges to show attention settling over time
OUTPUT_DIR = "outputs/05_daam"

# %%
import gc

import matplotlib.pyplot as plt
import numpy as np
import torch

from nbhelpers.daam import WordCutOffError, WordNotInPromptError, set_seed, trace
from nbhelpers.daam.heatmap import COLORBAR_LABEL
from nbhelpers.daam.words import word_token_positions
from nbhelpers.generation import default_settings
from nbhelpers.images import show_images
from nbhelpers.loading import load_pipeline
from nbhelpers.notebook import show_model_banner
from nbhelpers.stand_in import resolve_stand_in

# %%
# Offline stand-in: the one place this notebook changes for it. The toy model draws one coloured shape, nothing else,
# and attends at its own 64 px; the tiny one's UNet needs a few more pixels to have maps at all.
stand_in = resolve_stand_in(STAND_IN)  # "toy", "tiny" or None (the real models); NBHELPERS_STAND_IN is the default
if stand_in == "toy":
    PROMPT, WORDS = "a red circle on a gray background", ["circle", "red", "background"]
size = SIZE or {"toy": 64, "tiny": 128}.get(stand_in, 512)

# %% [markdown]
# ## 1. Trace one generation per model
#
# Inside `with trace(pipe) as tc:` every cross-attention layer reports its attention probabilities; after the
# call, `tc.compute_global_heat_map()` aggregates them into one map per token at latent resolution (64x64 for a
# 512 px image). SD v1.5 attends to the text at 64, 32, 16 and 8 latent pixels per side; DeciDiffusion's
# flexible UNet only at 32, 16 and 8. Following the reference, the coarsest (8x8) maps and the UNet's mid-block
# are left out by default, so the numbers are those of `daam` 0.2.0; `include_mid_block=True` adds the
# mid-block, `factors=[...]` picks the resolutions.
#
# `set_seed(SEED)` returns `torch.Generator().manual_seed(SEED)`, the CPU generator `generate()` uses in the
# other notebooks, and each model runs with its published defaults (`default_settings`), so the traced picture
# is the one `generate(pipe, PROMPT, seed=SEED)` makes, on a GPU as on the CPU.


# %%
def traced_generation(pipe, height, width):
    """One generation of PROMPT inside `trace`, with the model's defaults and seed SEED; returns (image, tracer).

    The tracer keeps its recording after the block: heat maps can be computed from it afterwards.
    """
    settings = {**default_settings(pipe), "height": height, "width": width}
    if STEPS is not None:
        settings["num_inference_steps"] = STEPS
    with torch.no_grad(), trace(pipe) as tc:
        image = pipe(PROMPT, generator=set_seed(SEED), **settings).images[0]
    return image, tc


results = {}
for name in MODELS:
    pipe = load_pipeline(name, stand_in=stand_in)
    show_model_banner(pipe)
    image, tc = traced_generation(pipe, size, size)
    global_map = tc.compute_global_heat_map()
    ranges = [list(r) for r in torch.arange(tc.num_steps).tensor_split(STEP_RANGES)]
    by_range = [tc.compute_global_heat_map(steps=[int(s) for s in r]) for r in ranges]
    results[name] = {
        "image": image,
        "map": global_map,
        "by_range": by_range,
        "ranges": ranges,
        "factors": sorted(tc.factors()),
        "label": pipe.nbhelpers_info.label,
    }
    print(f"{name}: {tc.num_steps} UNet calls, map factors recorded {sorted(tc.factors())}")
    del pipe
    gc.collect()
show_images([r["image"] for r in results.values()], [r["label"] for r in results.values()], img_width=256)

# %% [markdown]
# ## 2. The same words, both models, side by side
#
# Each overlay is the word's map, upsampled to the image and min-max normalised (red: where the word attended
# most), under the image, which fades where attention is high.

# %%
fig, axes = plt.subplots(
    len(results),
    len(WORDS) + 1,
    figsize=(3 * (len(WORDS) + 1) + 1, 3 * len(results)),
    squeeze=False,
    layout="constrained",
)
for row, (name, result) in zip(axes, results.items(), strict=True):
    row[0].imshow(result["image"])
    row[0].set_title(result["label"], fontsize=9)
    row[0].set_axis_off()
    for ax, word in zip(row[1:], WORDS, strict=True):
        result["map"].compute_word_heat_map(word).plot_overlay(result["image"], ax=ax)
        ax.set_title(f"{name}: {word}")
fig.colorbar(axes[0, 1].images[0], ax=axes, shrink=0.8, label=COLORBAR_LABEL)
fig.suptitle(f"Word heat maps: {', '.join(r['label'] for r in results.values())}")
plt.show()

# %% [markdown]
# ### With the toy model: does "circle" light up the circle?
#
# The toy model's pictures can be read back (`read_scene` finds the drawn shape), so a heat map can be checked
# instead of believed: the share of the shape word's attention that falls inside the drawn shape, divided by the
# shape's share of the picture. 1 means the word looks everywhere alike; above 1 it looks at the shape.
# `shape_word_attention` traces one generation per scene and returns that ratio for two groups of layers: DAAM's
# default (the down and up blocks' maps, the reference's rule for 512 px) and the coarsest maps the UNet attends
# at, mid-block included (4x4 in these 64 px models). Below, every shape and colour on a gray background, two
# seeds each, for each toy model. (Skipped with the real models: there is no ground truth for an owl.)
#
# **Measured with the shipped toy models**: in the SD-style toy the shape word concentrates on the shape in the
# 4x4 middle, **1.54x** its area share (87% of pictures above 1), and not in the default layers (0.95): a small
# model decides where its shape goes at its coarsest resolution, which DAAM's default leaves out because at
# 512 px that resolution (8x8) is too coarse to place anything. The DeciDiffusion-style toy shows no preference
# (about 1.0 in both): it draws the right shape only about half the time at this guidance. A heat map is a
# hypothesis about the model, and which layers you read it from is part of the hypothesis.

# %%
if stand_in == "toy":
    from nbhelpers.toy.evaluate import ATTENTION_VIEWS, shape_word_attention
    from nbhelpers.toy.shapes import COLOURS, SHAPES, Scene

    scenes = [Scene(shape=shape, colour=colour, background="gray") for shape in SHAPES for colour in COLOURS]
    bars = {}  # (model label, layer group) -> mean ratio per shape
    for name in MODELS:
        pipe = load_pipeline(name, stand_in=stand_in)
        ratios = {(view, shape): [] for view in ATTENTION_VIEWS for shape in SHAPES}
        for scene in scenes:
            for seed in (SEED, SEED + 1):
                try:
                    measured = shape_word_attention(pipe, scene, seed=seed)[0]
                except ValueError as err:  # the picture shows no shape: nothing to score
                    print(err)
                    continue
                for view, ratio in measured.items():
                    ratios[view, scene.shape].append(ratio)
        for view in ATTENTION_VIEWS:
            means = [float(np.mean(ratios[view, shape])) if ratios[view, shape] else 0.0 for shape in SHAPES]
            bars[name, view] = means
            print(name, view, {shape: f"{m:.2f}" for shape, m in zip(SHAPES, means, strict=True)})
        del pipe
        gc.collect()
    fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
    width = 0.8 / len(bars)
    for index, ((name, view), means) in enumerate(bars.items()):
        ax.bar(np.arange(len(SHAPES)) - 0.4 + width * (index + 0.5), means, width=width, label=f"{name}, {view} layers")
    ax.axhline(1.0, color="gray", linestyle="--", label="no preference")
    ax.set_xticks(range(len(SHAPES)), [f"'{shape}'" for shape in SHAPES])
    ax.set_xlabel("shape word of the prompt")
    ax.set_ylabel("attention inside the shape / shape's area share")
    ax.set_title("Where the shape word attends (4 prompts x 2 seeds per bar; toy model (shapes))", fontsize=9)
    ax.legend(fontsize=7)
    plt.show()

# %% [markdown]
# ## 3. Every word of the prompt
#
# Rare words are split into several tokens (`shinning` becomes `sh` + `inning`); their map is the mean of their
# tokens' maps. A word that appears twice uses both occurrences, unless `occurrence=` picks one.

# %%
last = results[MODELS[-1]]
print([(w.text, w.token_positions) for w in last["map"].words()])
last["map"].plot_word_grid(last["image"], cols=5, title=f"Every word: {last['label']}")
plt.show()

# %% [markdown]
# ## 4. How attention settles over the denoising steps
#
# Early steps decide the layout, later ones the details. Each column aggregates one range of steps.

# %%
word = WORDS[0]
fig, axes = plt.subplots(
    len(results), STEP_RANGES, figsize=(3 * STEP_RANGES + 1, 3 * len(results)), squeeze=False, layout="constrained"
)
for row, (name, result) in zip(axes, results.items(), strict=True):
    for ax, heat_map, steps in zip(row, result["by_range"], result["ranges"], strict=True):
        heat_map.compute_word_heat_map(word).plot_overlay(result["image"], ax=ax)
        ax.set_title(f"{name}: '{word}', steps {steps[0]}-{steps[-1]}", fontsize=9)
fig.colorbar(axes[0, 0].images[0], ax=axes, shrink=0.8, label=COLORBAR_LABEL)
fig.suptitle(f"'{word}' over the denoising steps: {', '.join(r['label'] for r in results.values())}")
plt.show()

# %% [markdown]
# ## 5. Any image size
#
# Each map's height and width are read from the layer that made it (the feature map entering its
# transformer), and its factor is exact: at a latent side that is not a multiple of 8 the UNet rounds up when
# it halves (65 -> 33 -> 17 -> 9), and the maps are placed cell for cell on the latent. So every size the
# pipeline accepts can be traced: SD takes multiples of 8 px, DeciDiffusion's UNet multiples of 64 px.

# %%
pipe = load_pipeline(MODELS[0], stand_in=stand_in)
height, width = (72, 136) if stand_in else (520, 648)
image, tc = traced_generation(pipe, height, width)
odd_map = tc.compute_global_heat_map()
for index, (h, w) in sorted(tc.layer_sizes.items()):
    print(f"{tc.layer_names[index]:55s} {h:3d} x {w:3d}  factor {tc.layer_factors[index]}")
print("latent", tc.latent_size, "-> word map", tuple(odd_map.compute_word_heat_map(WORDS[0]).value.shape))
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
odd_map.compute_word_heat_map(WORDS[0]).plot_overlay(image, ax=ax, colorbar=True)
ax.set_title(f"'{WORDS[0]}' at {height}x{width} px\n{pipe.nbhelpers_info.label}", fontsize=10)
plt.show()
del pipe
_ = gc.collect()

# %% [markdown]
# ## 6. Save the maps, and words that have no map
#
# A word that is not in the prompt raises `WordNotInPromptError`, listing the prompt's words. The text encoder
# reads 77 tokens (start, 75 prompt tokens, end) and the pipeline cuts longer prompts: a word past the cut has
# no map and raises `WordCutOffError` (a kind of `WordNotInPromptError`).

# %%
for name, result in results.items():
    paths = result["map"].save_words(f"{OUTPUT_DIR}/{name}", result["image"])
    print(f"{name}: {len(paths)} files in {OUTPUT_DIR}/{name}")
try:
    last["map"].compute_word_heat_map("giraffe")
except WordNotInPromptError as err:
    print("WordNotInPromptError:", err)
long_prompt = PROMPT + ", " + ", ".join(["highly detailed"] * 40) + ", giraffe"  # 135 tokens: 'giraffe' is past the cut
try:
    word_token_positions(last["map"].tokenizer, long_prompt, "giraffe")  # what compute_word_heat_map looks up
except WordCutOffError as err:
    print("WordCutOffError:", err)
