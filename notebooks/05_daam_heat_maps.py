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
# - see what a cross-attention layer computes, with the real tensor shapes, and how a word's map is built from it;
# - trace a generation with `nbhelpers.daam` (the reference `daam` API: `trace`, `compute_global_heat_map`,
#   `compute_word_heat_map`, `plot_overlay`), on current diffusers, for SD and for DeciDiffusion;
# - compare the same prompt's word maps from SD v1.5 and DeciDiffusion on one colour scale;
# - turn a map into a segmentation mask, and measure how two nouns' maps overlap ("a giraffe and a zebra");
# - plot every word of a prompt, and measure how a word's map settles over the denoising steps;
# - trace any image size, and save maps as arrays and pictures.
#
# Tracing records only the cross-attention probabilities of the conditional half of the batch, summed on the
# device as they come. What that costs has been recorded only for tiny random-weight models on a CPU (section 1
# prints the record from a clone of the repository); `benchmarks/gpu_suite.py` measures it on a GPU.

# %%
# Set-up (Colab, Paperspace, a fresh runtime): installs nbhelpers, then what this notebook needs, and says so.
import importlib.util, os, subprocess, sys  # noqa: E401, I001

if importlib.util.find_spec("nbhelpers") is None:  # the project's code: the checkout this notebook is in, or git
    url = os.environ.get("NBHELPERS_REPO_URL", "https://github.com/your-org/diffusion-tutorials")
    source = ".." if os.path.isdir("../nbhelpers") else f"git+{url}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", source], check=True)
from nbhelpers.tutorials.setup import set_up  # noqa: E402

set_up("notebooks")  # this notebook's extras: installs what is missing or too old, or says to restart

# %% [markdown]
# ## What to expect
#
# - **GPU**: recommended (a free Colab T4 is enough); without one, `STAND_IN = "toy"` runs everything offline.
# - **Downloads**: SD v1.5 and DeciDiffusion in fp16, once (the table gives each size).
# - **Time**: a traced picture per model, two for the noun pairs and one at an odd size, each at about the table's
#   seconds per image (estimates: see the note under the table) plus the tracing's cost (not yet measured on a GPU).

# %%
from nbhelpers.notebook import show_what_to_expect

show_what_to_expect(["sd-v1-5", "deci-v1"])

# %% tags=["parameters"]
# Papermill parameters
MODELS = ["sd-v1-5", "deci-v1"]
STAND_IN = None  # None: the real models (unless NBHELPERS_STAND_IN says otherwise); "toy" or "tiny": offline
PROMPT = "A big owl with bright shinning eyes sitting on a tree branch"  # misspelt on purpose: section 7 splits it
WORDS = ["owl", "eyes", "branch"]
# Two nouns in one prompt, whose maps are compared: cohyponyms (kinds of one thing), and a pair that is not
PAIRS = [("a giraffe and a zebra", "giraffe", "zebra"), ("a zebra and a fridge", "zebra", "fridge")]
THRESHOLD = 0.4  # a min-max normalised map above this is the word's mask (the reference implementation's value)
SEED = 0
STEPS = None  # None: each model's default (50 for SD, 30 for DeciDiffusion)
SIZE = None  # image side in px, a multiple of 64 for DeciDiffusion (8 for SD); None: 512 (a stand-in: its own)
STEP_RANGES = 3  # how many consecutive step ranges to show attention settling over time
OUTPUT_DIR = "outputs/05_daam"

# %%
import gc

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch

from nbhelpers.daam import WordCutOffError, WordNotInPromptError, set_seed, trace
from nbhelpers.daam.anatomy import cross_attention_shapes
from nbhelpers.daam.measures import attention_share, mask_overlap, settling, word_mask
from nbhelpers.daam.words import word_token_positions
from nbhelpers.generation import default_settings, pipeline_size_multiple
from nbhelpers.images import show_images
from nbhelpers.loading import load_pipeline
from nbhelpers.notebook import project_record, show_model_banner
from nbhelpers.stand_in import resolve_stand_in, stand_in_mark

SHARE_LABEL = "share of the pixel's attention on the word\n(mean over layers, heads and steps)"

# %%
# Offline stand-in: the one place this notebook changes for it. The toy model draws one coloured shape, nothing else,
# and attends at its own 64 px; the tiny one's UNet needs a few more pixels to have maps at all. The toy knows no
# giraffes: its pairs are two shapes and two colours it was trained on, and the prompt asks for two shapes at once
# (it draws one). Section 9's odd size is small for both.
stand_in = resolve_stand_in(STAND_IN)  # "toy", "tiny" or None (the real models); NBHELPERS_STAND_IN is the default
mark = f" ({stand_in_mark(stand_in)})" if stand_in else ""
if stand_in == "toy":
    PROMPT, WORDS = "a red circle on a gray background", ["circle", "red", "background"]
    two_shapes = "a red circle and a blue square on a gray background"
    PAIRS = [(two_shapes, "circle", "square"), (two_shapes, "red", "blue")]
size = SIZE or {"toy": 64, "tiny": 128}.get(stand_in, 512)
odd_size = (72, 136) if stand_in else (520, 648)  # section 9: height, width before rounding to the model's multiple

# %% [markdown]
# ## 1. Trace one generation per model
#
# Inside `with trace(pipe) as tc:` every cross-attention layer reports its attention probabilities; afterwards
# `tc.compute_global_heat_map()` aggregates them into one map per token at latent resolution (64x64 for a 512 px
# image). A layer's *factor* says how much smaller its map is than the latent, `sqrt(latent area / map area)`: 1 for
# a 64x64 map at 512 px, 8 for an 8x8 one. Following the reference, factor 8 and the UNet's mid-block are left out
# by default (section 5 reads the others). `set_seed(SEED)` is the CPU generator `generate()` uses and each model
# runs with its published defaults, so the traced picture is the one `generate(pipe, PROMPT, seed=SEED)` makes.


# %%
def traced_generation(pipe, prompt, height, width):
    """One generation of `prompt` inside `trace`, with the model's defaults and seed SEED; returns (image, tracer).

    The tracer keeps its recording after the block: heat maps can be computed from it afterwards.
    """
    settings = {**default_settings(pipe), "height": height, "width": width}
    if STEPS is not None:
        settings["num_inference_steps"] = STEPS
    with torch.no_grad(), trace(pipe) as tc:
        image = pipe(prompt, generator=set_seed(SEED), **settings).images[0]
    return image, tc


def layer_views(tc):
    """Heat maps of the same generation read from other layers or heads: DAAM's default, each resolution alone
    (mid-block included), and one head."""
    views = {"all (default)": tc.compute_global_heat_map()}
    for factor in sorted(tc.factors()):
        side = -(-tc.latent_size[0] // factor), -(-tc.latent_size[1] // factor)
        maps = tc.compute_global_heat_map(factors=[factor], include_mid_block=True)
        views[f"only the {side[0]}x{side[1]} maps"] = maps
    views["only head 0"] = tc.compute_global_heat_map(head_idx=0)
    return views


results = {}
for name in MODELS:
    pipe = load_pipeline(name, stand_in=stand_in)
    show_model_banner(pipe)
    image, tc = traced_generation(pipe, PROMPT, size, size)
    ranges = [[int(s) for s in r] for r in torch.arange(tc.num_steps).tensor_split(STEP_RANGES)]
    results[name] = {
        "image": image,
        "label": pipe.nbhelpers_info.label,
        "steps": tc.num_steps,
        "map": tc.compute_global_heat_map(),
        "shapes": cross_attention_shapes(tc),
        "views": layer_views(tc),
        "by_range": [attention_share(tc.compute_global_heat_map(steps=r), len(r)) for r in ranges],
        "ranges": ranges,
        "settling": {word: settling(tc, word) for word in WORDS},
    }
    print(f"{name}: {tc.num_steps} UNet calls, map factors recorded {sorted(tc.factors())}")
    del pipe, tc
    gc.collect()
show_images([r["image"] for r in results.values()], [r["label"] for r in results.values()], img_width=256)
overhead = project_record("daam_overhead.json")  # benchmarks/results/ (None without the project's repository)
if overhead is None:
    print("no record of the tracing cost here: it ships with the repository (benchmarks/results/daam_overhead.json)")
for row in overhead["results"] if overhead else []:
    print(
        f"recorded cost of tracing, {row['model']} ({row['weights']}, {row['size']} px, {row['steps']} steps, "
        f"{overhead['device'].upper()}): {row['overhead_ratio']:.2f}x the time of the same generation untraced"
    )

# %% [markdown]
# ## 2. What one cross-attention layer computes
#
# Each latent pixel of a layer's `h x w` feature map makes a query; each of the text encoder's 77 tokens makes a key
# (and a value). Per head, a softmax over the 77 tokens turns every pixel's query-key scores into probabilities that
# sum to 1, so the layer's attention is `(heads, h*w, 77)` and a word's map is its token's column, reshaped to
# `h x w`. DAAM sums these maps over the denoising steps, upsamples them to the latent, and averages them over
# layers and heads; the shapes below are read from the traced run (`cross_attention_shapes`).

# %%
for result in results.values():
    print(f"{result['label']}: attention per layer, for one image (the conditional half of the batch)")
    print(f"{'layer':54s} {'map':>7s} {'queries from':>13s} {'keys from':>10s} {'attention':>15s}  per-pixel sum")
    for s in result["shapes"]:
        low, high = s.softmax_sum
        print(
            f"{s.layer:54s} {s.map_size[0]:>3d}x{s.map_size[1]:<3d} {str(s.queries):>13s} {str(s.keys):>10s} "
            f"{str(s.probabilities):>15s}  {low:.5f}-{high:.5f}"
        )
    print("(queries from: pixels x image channels; keys (and values) from: tokens x text features; attention: heads x")
    print(" pixels x tokens; per-pixel sum: each pixel's attention over the tokens, per UNet call: min-max)")
    rows = word_token_positions(result["map"].tokenizer, PROMPT, WORDS[0])
    print(
        f"'{WORDS[0]}' is token column {rows} of each layer's attention; summed over {result['steps']} UNet calls, "
        f"upsampled and averaged over layers and heads it becomes the word map "
        f"{tuple(result['map'].compute_word_heat_map(WORDS[0]).value.shape)} (the latent), one of the global map's "
        f"{tuple(result['map'].heat_maps.shape)}.\n"
    )

# %% [markdown]
# ## 3. The same words, both models, on one scale
#
# Divided by the number of UNet calls, a heat map is the share of each pixel's attention that went to the word
# (`attention_share`), a unit all maps have in common, drawn on one colour scale in every panel. DeciDiffusion's UNet
# has no 64x64 cross-attention, so by default its maps come from its 32x32 and 16x16 layers only (8x8 and the
# mid-block left out), while SD's include 64x64 detail that DeciDiffusion's cannot. The image fades where the share
# is high.

# %%
shares = {name: attention_share(r["map"], r["steps"]) for name, r in results.items()}
word_maps = {(name, word): shares[name].compute_word_heat_map(word) for name in results for word in WORDS}
vmax = max(float(m.expand_as(results[name]["image"], absolute=True).max()) for (name, _), m in word_maps.items())
fig, axes = plt.subplots(
    len(results), len(WORDS) + 1, figsize=(3 * len(WORDS) + 4, 3 * len(results)), squeeze=False, layout="constrained"
)
for row, (name, result) in zip(axes, results.items(), strict=True):
    row[0].imshow(result["image"])
    row[0].set_title(result["label"], fontsize=9)
    row[0].set_axis_off()
    for ax, word in zip(row[1:], WORDS, strict=True):
        word_maps[name, word].plot_overlay(result["image"], ax=ax, vmax=vmax)
        ax.set_title(f"{name}: {word}")
fig.colorbar(axes[0, 1].images[0], ax=axes, shrink=0.8, label=SHARE_LABEL)
fig.suptitle(f"Word heat maps: {', '.join(r['label'] for r in results.values())}")
plt.show()

# %% [markdown]
# ### Offline only: does "circle" light up the circle?
#
# *Skipped with the real models: there is no ground truth for an owl.* The toy's pictures can be read back, so a map
# can be checked: the shape word's attention inside the drawn shape divided by the shape's share of the picture (1:
# no preference; above 1: it looks at the shape), in DAAM's default layers and in the coarsest ones (4x4 in these 64
# px models, mid-block included). The project's record comes first, then this run's measurement; which layers you
# read a map from is part of what it claims about the model.

# %%
if stand_in == "toy":
    import pandas as pd
    from IPython.display import display

    from nbhelpers.notebook import toy_attention_table
    from nbhelpers.toy.evaluate import ATTENTION_VIEWS, shape_word_attention
    from nbhelpers.toy.shapes import COLOURS, SHAPES, Scene

    recorded = toy_attention_table()  # benchmarks/results/toy_lessons.json; None without the repository
    if recorded is not None:
        how, rows = recorded
        print(f"Recorded ({how}){mark}:")
        display(pd.DataFrame(rows).set_index(["toy model", "layers"]))

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
    ax.set_title(f"Where the shape word attends ({len(COLOURS)} prompts x 2 seeds per bar){mark}", fontsize=9)
    ax.legend(fontsize=7)
    plt.show()

# %% [markdown]
# ## 4. A map as a segmentation mask
#
# DAAM's paper evaluates maps as segmentations of the nouns they name: the map is normalised and thresholded, and
# the authors' code uses 0.4 on the min-max normalised map (`THRESHOLD`, `word_mask`). The mask below is the
# word's guess at where its object is.

# %%
fig, axes = plt.subplots(len(results), 3, figsize=(10, 3.3 * len(results)), squeeze=False, layout="constrained")
for row, (name, result) in zip(axes, results.items(), strict=True):
    word = WORDS[0]
    word_map = shares[name].compute_word_heat_map(word)
    mask = word_mask(word_map, result["image"], THRESHOLD)
    row[0].imshow(result["image"])
    row[0].set_title(result["label"], fontsize=9)
    word_map.plot_overlay(result["image"], ax=row[1], colorbar=True)
    row[1].set_title(f"'{word}', min-max normalised", fontsize=9)
    row[2].imshow(mask.numpy(), cmap="gray", vmin=0, vmax=1)
    row[2].set_title(
        f"mask: normalised map > {THRESHOLD} ({float(mask.float().mean()):.0%} of the picture)", fontsize=9
    )
    for ax in row[::2]:
        ax.set_axis_off()
fig.suptitle(f"'{WORDS[0]}' as a segmentation mask")
plt.show()

# %% [markdown]
# ## 5. Which layers and heads the map is read from
#
# The same generation gives other maps when read from one resolution or one head alone (`factors=`,
# `include_mid_block=`, `head_idx=`). All panels share one scale (the attention share), so a resolution whose maps
# are flat looks pale.

# %%
views = {
    name: {label: attention_share(m, r["steps"]) for label, m in r["views"].items()} for name, r in results.items()
}
vmax = max(
    float(m.compute_word_heat_map(WORDS[0]).expand_as(results[name]["image"], absolute=True).max())
    for name in views
    for m in views[name].values()
)
cols = max(len(v) for v in views.values())
fig, axes = plt.subplots(
    len(views), cols, figsize=(2.8 * cols + 1, 3.2 * len(views)), squeeze=False, layout="constrained"
)
for row, (name, model_views) in zip(axes, views.items(), strict=True):
    image = results[name]["image"]
    for ax in row[len(model_views) :]:
        ax.set_axis_off()
    for ax, (label, heat_map) in zip(row, model_views.items(), strict=False):
        heat_map.compute_word_heat_map(WORDS[0]).plot_overlay(image, ax=ax, vmax=vmax)
        ax.set_title(f"{name}: {label}", fontsize=8)
fig.colorbar(axes[0, 0].images[0], ax=axes, shrink=0.8, label=SHARE_LABEL)
fig.suptitle(f"'{WORDS[0]}' from other layers and heads: {', '.join(r['label'] for r in results.values())}")
plt.show()

# %% [markdown]
# ## 6. Two nouns in one prompt: how much do their maps overlap?
#
# The paper finds that cohyponyms, two kinds of one thing, entangle: "a giraffe and a zebra" tends to give a giraffe
# or a zebra but not both, and cohyponym pairs' heat maps overlap more than other pairs'. Here each pair's masks are
# compared by their intersection over each word's area and over their union.

# %%
pipe = load_pipeline(MODELS[0], stand_in=stand_in)
label = pipe.nbhelpers_info.label
generations = {}  # prompt -> (image, attention-share heat map)
for prompt in dict.fromkeys(prompt for prompt, _, _ in PAIRS):
    image, tc = traced_generation(pipe, prompt, size, size)
    generations[prompt] = (image, attention_share(tc.compute_global_heat_map(), tc.num_steps))
vmax = max(
    float(generations[prompt][1].compute_word_heat_map(word).expand_as(generations[prompt][0], absolute=True).max())
    for prompt, a, b in PAIRS
    for word in (a, b)
)
fig, axes = plt.subplots(len(PAIRS), 4, figsize=(13, 3.3 * len(PAIRS)), squeeze=False, layout="constrained")
for row, (prompt, a, b) in zip(axes, PAIRS, strict=True):
    image, heat = generations[prompt]
    masks = [word_mask(heat.compute_word_heat_map(word), image, THRESHOLD) for word in (a, b)]
    overlap = mask_overlap(*masks)
    print(
        f"'{prompt}': the masks of '{a}' and '{b}' overlap on {overlap.of_a:.0%} of the first and "
        f"{overlap.of_b:.0%} of the second; IoU {overlap.iou:.2f}"
    )
    row[0].imshow(image)
    row[0].set_title(f"'{prompt}'\n{label}", fontsize=8)
    row[0].set_axis_off()
    for ax, word in zip(row[1:3], (a, b), strict=True):
        heat.compute_word_heat_map(word).plot_overlay(image, ax=ax, vmax=vmax)
        ax.set_title(f"'{word}'", fontsize=9)
    both = np.zeros((*masks[0].shape, 3))
    both[..., 0], both[..., 2] = masks[0].numpy(), masks[1].numpy()  # red: a, blue: b, magenta: both
    row[3].imshow(both)
    row[3].set_title(f"masks: intersection/area {overlap.of_a:.2f} ('{a}'), {overlap.of_b:.2f} ('{b}')", fontsize=8)
    row[3].set_axis_off()
    row[3].legend(
        handles=[Patch(color=c, label=t) for c, t in (("red", a), ("blue", b), ("magenta", "both"))],
        loc="lower right",
        fontsize=7,
    )
fig.colorbar(axes[0, 1].images[0], ax=axes[:, 1:3], shrink=0.8, label=SHARE_LABEL)
fig.suptitle(f"Overlap of two words' masks (normalised map > {THRESHOLD})")
plt.show()

# %% [markdown]
# ### Offline only: the masks against the shapes the toy drew
#
# *Skipped with the real models, which have no truth to compare with.* The picture reader finds the shape the toy
# drew, so each mask of sections 4 and 5 gets a score: its intersection over union (IoU) with the drawn shape. The
# two-shape prompts of section 6 show what the toy drew when asked for two shapes.

# %%
if stand_in == "toy":
    import pandas as pd
    from IPython.display import display

    from nbhelpers.toy.evaluate import read_scene

    scores = {}
    for name, model_views in views.items():
        image = results[name]["image"]
        truth = torch.from_numpy(read_scene(image).mask)
        scores[name] = {
            label: mask_overlap(word_mask(heat_map.compute_word_heat_map(WORDS[0]), image, THRESHOLD), truth).iou
            for label, heat_map in model_views.items()
        }
    print(f"IoU of the mask of '{WORDS[0]}' with the drawn shape, by the layers read{mark}:")
    display(pd.DataFrame(scores).T.round(2).fillna("-"))  # "-": that model has no maps of that size
    for prompt, (image, _) in generations.items():
        reading = read_scene(image)
        print(f"'{prompt}': the toy drew one {reading.colour} {reading.shape} on {reading.background}{mark}")

# %% [markdown]
# ## 7. Every word of the prompt
#
# Rare words are split into several tokens (`shinning` becomes `sh` + `inning`); their map is the mean of their
# tokens' maps. A word that appears twice uses both occurrences, unless `occurrence=` picks one. The grid draws all
# words on one scale.

# %%
last = MODELS[-1]
print([(w.text, w.token_positions) for w in results[last]["map"].words()])
shares[last].plot_word_grid(
    results[last]["image"], cols=5, title=f"Every word: {results[last]['label']}", label=SHARE_LABEL
)
plt.show()

# %% [markdown]
# ## 8. How a word's map settles over the denoising steps
#
# Early steps decide the layout, later ones the details. The first figure aggregates consecutive ranges of steps
# (on one scale); the second measures, for each step alone, the correlation of the word's map with its map over all
# steps: once it stays near 1, where the word acts is decided.

# %%
word = WORDS[0]
vmax = max(
    float(m.compute_word_heat_map(word).expand_as(r["image"], absolute=True).max())
    for r in results.values()
    for m in r["by_range"]
)
fig, axes = plt.subplots(
    len(results), STEP_RANGES, figsize=(3 * STEP_RANGES + 2, 3 * len(results)), squeeze=False, layout="constrained"
)
for row, (name, result) in zip(axes, results.items(), strict=True):
    for ax, heat_map, steps in zip(row, result["by_range"], result["ranges"], strict=True):
        heat_map.compute_word_heat_map(word).plot_overlay(result["image"], ax=ax, vmax=vmax)
        ax.set_title(f"{name}: '{word}', steps {steps[0]}-{steps[-1]}", fontsize=9)
fig.colorbar(axes[0, 0].images[0], ax=axes, shrink=0.8, label=SHARE_LABEL)
fig.suptitle(f"'{word}' over the denoising steps: {', '.join(r['label'] for r in results.values())}")
plt.show()

fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
for (name, result), style in zip(results.items(), ("-", "--", ":", "-."), strict=False):
    for word_index, (curve_word, curve) in enumerate(result["settling"].items()):
        ax.plot(range(len(curve)), curve, style, color=f"C{word_index}", label=f"{name}: '{curve_word}'")
ax.set_xlabel("denoising step (UNet call)")
ax.set_ylabel("correlation with the map\nover all steps (Pearson r)")
lowest = min(min(curve) for r in results.values() for curve in r["settling"].values())
ax.set_ylim(min(0.0, lowest - 0.05), 1.02)
ax.set_title(f"How each word's map settles: {', '.join(r['label'] for r in results.values())}", fontsize=9)
ax.legend(fontsize=7, ncol=2)
plt.show()

# %% [markdown]
# ## 9. Any image size
#
# Each map's height and width are read from the layer that made it (the feature map entering its transformer), and
# its factor is exact: at a latent side that is not a multiple of 8 the UNet rounds up when it halves (65 -> 33 -> 17
# -> 9). So every size the pipeline accepts can be traced: SD takes multiples of 8 px, DeciDiffusion's UNet
# multiples of 64 px.

# %%
multiple = pipeline_size_multiple(pipe)  # 8 px for SD, 64 px for DeciDiffusion
height, width = (side // multiple * multiple for side in odd_size)
print(f"{label} takes sides that are multiples of {multiple} px: tracing at {height}x{width}")
image, tc = traced_generation(pipe, PROMPT, height, width)
odd_map = tc.compute_global_heat_map()
for index, (h, w) in sorted(tc.layer_sizes.items()):
    print(f"{tc.layer_names[index]:55s} {h:3d} x {w:3d}  factor {tc.layer_factors[index]}")
print("latent", tc.latent_size, "-> word map", tuple(odd_map.compute_word_heat_map(WORDS[0]).value.shape))
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
odd_map.compute_word_heat_map(WORDS[0]).plot_overlay(image, ax=ax, colorbar=True)
ax.set_title(f"'{WORDS[0]}' at {height}x{width} px\n{label}", fontsize=10)
plt.show()
del pipe, tc
_ = gc.collect()

# %% [markdown]
# ## 10. Save the maps, and words that have no map
#
# A word that is not in the prompt raises `WordNotInPromptError`, listing the prompt's words. The text encoder
# reads 77 tokens (start, 75 prompt tokens, end) and the pipeline cuts longer prompts: a word past the cut has
# no map and raises `WordCutOffError` (a kind of `WordNotInPromptError`).

# %%
for name, result in results.items():
    paths = result["map"].save_words(f"{OUTPUT_DIR}/{name}", result["image"])
    print(f"{name}: {len(paths)} files in {OUTPUT_DIR}/{name}")
try:
    results[last]["map"].compute_word_heat_map("giraffe")
except WordNotInPromptError as err:
    print("WordNotInPromptError:", err)
long_prompt = PROMPT + ", " + ", ".join(["highly detailed"] * 40) + ", giraffe"  # 135 tokens: 'giraffe' is past the cut
try:
    word_token_positions(results[last]["map"].tokenizer, long_prompt, "giraffe")  # what compute_word_heat_map looks up
except WordCutOffError as err:
    print("WordCutOffError:", err)
