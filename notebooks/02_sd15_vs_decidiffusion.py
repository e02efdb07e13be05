# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
# ---

# %% [markdown]
# # 02 · SD v1.5 vs DeciDiffusion: same prompts, same seeds, measured
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/your-org/diffusion-tutorials/blob/main/notebooks/02_sd15_vs_decidiffusion.ipynb)
#
# DeciDiffusion's claim: SD-v1.5-like images in 30 steps instead of 50, with a cheaper UNet. You will learn to:
#
# - compare both models side by side on the same prompts and seeds;
# - measure latency, throughput and GPU memory properly (synchronised, warmed up, median of repeats, first call
#   apart) with `nbhelpers.perf.benchmark`, and switch on the fast path (`optimize="compile"`);
# - explain the speed-up from parameters and FLOPs: fewer steps times a cheaper step;
# - turn seconds per image into cost per 10,000 images, with your GPU and library versions recorded.
#
# On a GPU the numbers are yours. With a stand-in (offline, CPU) they are timings of small models: they show the
# method, not the models.

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
# - **GPU**: needed for numbers that mean anything (a free Colab T4 works). On a CPU the notebook runs, but the
#   timings are of a CPU, and with a stand-in (`STAND_IN = "toy"` or `"tiny"`) of small models (every chart and
#   picture then says which).
# - **Downloads**: SD v1.5 and DeciDiffusion, about 2.7 GB each in fp16 (table below, computed from the configs).
# - **Time on a T4**: the side-by-side and the benchmark run each model about 20 times; with the table's
#   per-image *estimates* (FLOPs scaled from a published A10 timing, not measured here) plan on 10-15 minutes
#   including downloads. `OPTIMIZE = ["none", "compile"]` adds about a minute of compilation per model.
# - **Model cards**: linked in the table.

# %%
from nbhelpers.notebook import show_what_to_expect

show_what_to_expect(["sd-v1-5", "deci-v1"])

# %% tags=["parameters"]
# Papermill parameters
MODELS = ["sd-v1-5", "deci-v1"]  # add "small-sd-v0" to compare it too
STAND_IN = None  # None: the real models (unless NBHELPERS_STAND_IN says otherwise); "toy" or "tiny": offline
PROMPTS = ["A photo of an astronaut riding a horse on Mars", "A big owl with bright shinning eyes"]
SEEDS = [0, 1]
OPTIMIZE = ["none"]  # on a CUDA GPU try ["none", "compile"]: the first compiled call takes about a minute
BATCH_SIZES = [1]
WARMUP = 2
REPEATS = 3
DOLLARS_PER_HOUR = 1.10  # what your GPU costs per hour (e.g. a cloud A10G); cost = seconds per image x price
OUTPUT = "outputs/02_compare/bench.json"

# %%
import gc

import matplotlib.pyplot as plt
import pandas as pd
import torch

from nbhelpers.catalog import get_spec
from nbhelpers.environment import environment_report
from nbhelpers.generation import generate
from nbhelpers.images import show_images
from nbhelpers.loading import load_pipeline
from nbhelpers.notebook import bar_chart, show_model_banner, with_mark
from nbhelpers.perf.benchmark import BenchSettings, run_benchmark, save_report
from nbhelpers.perf.flops import full_size_parameters, model_step_flops
from nbhelpers.stand_in import resolve_stand_in, stand_in_mark

# %%
# Offline stand-in: the one place this notebook changes for it. The toy models draw one coloured shape on a plain
# background, so they get prompts of that kind; every picture and chart made from a stand-in is marked.
stand_in = resolve_stand_in(STAND_IN)  # "toy", "tiny" or None (the real models); NBHELPERS_STAND_IN is the default
mark = stand_in_mark(stand_in)
if stand_in == "toy":
    PROMPTS = ["a red circle on a gray background", "a yellow triangle on a black background"]

# %% [markdown]
# ## 1. Side by side
#
# Each model runs with its published defaults: SD v1.5 50 PNDM steps, DeciDiffusion 30 DDIM steps with
# guidance rescale 0.7; guidance scale 7.5 for both. Same prompts, same seeds. Offline, the two toy models stand in:
# an SD-style one (epsilon prediction, SD's betas) and a DeciDiffusion-style one (flexible UNet, v-prediction,
# zero-SNR DDIM), both trained on the same shapes pictures.

# %%
gallery = {}
for name in MODELS:
    pipe = load_pipeline(name, stand_in=stand_in)
    show_model_banner(pipe)
    gallery[name] = [generate(pipe, prompt, seed=seed) for prompt in PROMPTS for seed in SEEDS]
    del pipe
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

images, labels = [], []
for index, (prompt, seed) in enumerate((p, s) for p in PROMPTS for s in SEEDS):
    for name in MODELS:
        result = gallery[name][index]
        images.append(result.images[0])
        labels.append(
            with_mark(f"{name}, {result.settings['num_inference_steps']} steps, seed {seed}: {prompt[:30]}", mark)
        )
show_images(images, labels, img_width=220)

# %% [markdown]
# ## 2. Measured: latency, throughput, memory
#
# `run_benchmark` times the whole pipeline call and, separately, one UNet step (batch 2 with guidance).
# Each figure is the median of `REPEATS` runs after `WARMUP` untimed calls; the first call is reported
# apart because it pays for compilation and caches. Safety checkers are off for both models.

# %%
# Offline the timings are of the stand-in models (the report says so): they time the code path, not the real models.
settings = BenchSettings(
    models=MODELS,
    weights="hub",
    stand_in=stand_in or "none",
    optimize=OPTIMIZE,
    batch_sizes=BATCH_SIZES,
    warmup=WARMUP,
    repeats=REPEATS,
)
report = run_benchmark(settings)
table = pd.DataFrame(report["results"])
print("Weights:", report["weights"], "| device:", report["device"], "| dtype:", report["dtype"])
table[
    [
        "model",
        "optimize",
        "batch_size",
        "steps",
        "seconds_per_image",
        "images_per_second",
        "unet_step_ms",
        "first_call_seconds",
        "peak_memory_gib",
        "max_abs_pixel_difference_vs_first_mode",
    ]
].round(4)

# %%
# One bar per (model, fast path, batch size): "plain" is the pipeline as loaded, "compile" the fast path.
path_names = {"none": "plain", "compile": "compiled"}
labels = [f"{r.model}\n{path_names.get(r.optimize, r.optimize)}, batch of {r.batch_size}" for r in table.itertuples()]
charts = [
    ("seconds_per_image", "Latency", "s / image"),
    ("images_per_second", "Throughput", "images / s"),
    ("unet_step_ms", "UNet step (guided)", "ms"),
]
if table["peak_memory_gib"].notna().all():
    charts.append(("peak_memory_gib", "Peak GPU memory", "GiB"))
fig, axes = plt.subplots(1, len(charts), figsize=(4.5 * len(charts), 3.6))
for ax, (column, title, unit) in zip(axes, charts, strict=True):
    bar_chart(labels, table[column].tolist(), title=title, ylabel=unit, ax=ax)
    ax.set_xlabel("model, pipeline, batch size")
fig.suptitle(with_mark(f"{report['weights']} on {report['device']}", mark), fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Where the speed comes from
#
# Counted on the real architectures (on PyTorch's meta device: no weights, no memory, works offline): UNet
# parameters and FLOPs of one guided step at 512x512, times the default number of steps.

# %%
rows = []
for name in MODELS:
    spec = get_spec(name)
    gflop = model_step_flops(name) / 1e9
    rows.append(
        {
            "model": name,
            "UNet params (M)": full_size_parameters(name) / 1e6,
            "GFLOP per guided step": gflop,
            "steps": spec.num_inference_steps,
            "TFLOP per image (UNet)": gflop * spec.num_inference_steps / 1e3,
        }
    )
compute = pd.DataFrame(rows).set_index("model")
baseline = compute["TFLOP per image (UNet)"].iloc[0]
compute["compute vs first model"] = compute["TFLOP per image (UNet)"] / baseline
fig, ax = plt.subplots(figsize=(5, 3.2))
bar_chart(
    compute.index.tolist(),
    compute["TFLOP per image (UNet)"].tolist(),
    title="UNet work per 512px image (full-size architectures, counted)",
    ylabel="TFLOP per image",
    ax=ax,
)
ax.set_xlabel("model (default steps)")
plt.show()
compute.round(3)

# %% [markdown]
# DeciDiffusion's step costs about 24% fewer FLOPs than SD v1.5's (1228.6 vs 1606.5 GFLOP) and it takes 30
# steps instead of 50: about 2.2x less UNet work per image. On a GPU, batch-1 generation is also bound by kernel
# launches, which is what `optimize="compile"` (CUDA graphs) removes.

# %% [markdown]
# ## 4. Cost per 10,000 images
#
# cost = seconds per image x 10,000 / 3600 x price per hour, using the measured medians above.

# %%
cost = table[["model", "optimize", "batch_size", "seconds_per_image"]].copy()
cost["GPU hours per 10k images"] = cost["seconds_per_image"] * 10_000 / 3600
cost["$ per 10k images"] = cost["GPU hours per 10k images"] * DOLLARS_PER_HOUR
print(f"At ${DOLLARS_PER_HOUR:.2f}/hour on {report['device']} ({report['weights']}):")
cost.round(3)

# %% [markdown]
# ## 5. The published claims beside what was measured
#
# DeciDiffusion's announcement makes three claims against SD v1.5. Each is set beside the figure it rests on
# and the ratio measured in this notebook, with where each number comes from:
#
# - "**40% fewer steps**": 30 instead of 50 default steps. A fact of the two models' defaults (the catalog); the
#   claim is that quality holds, which Deci supports with a user study, not something a timing can check.
# - "**about 3x faster**": measured by Deci with its own Infery runtime. The model card's own PyTorch figures on an
#   A10 (fp16, 512 px) are 2.95 s for SD v1.5 at 50 steps and 1.29 s for DeciDiffusion at 30 steps: 2.3x.
# - "**66% lower cost per 10,000 images**": cost is proportional to seconds per image at a fixed price per hour, so
#   it is the same ratio read as a saving.

# %%
steps_of = {name: get_spec(name).num_inference_steps for name in MODELS}
if {"sd-v1-5", "deci-v1"} <= set(MODELS):
    first_setting = (table["optimize"] == OPTIMIZE[0]) & (table["batch_size"] == BATCH_SIZES[0])
    seconds = table[first_setting].set_index("model")["seconds_per_image"]
    speedup = seconds["sd-v1-5"] / seconds["deci-v1"]
    flop_ratio = compute.loc["sd-v1-5", "TFLOP per image (UNet)"] / compute.loc["deci-v1", "TFLOP per image (UNet)"]
    where = with_mark(f"this notebook, {report['device']}, {report['weights']}", mark)
    claims = pd.DataFrame(
        [
            {
                "claim": "40% fewer steps",
                "published": "30 vs 50 steps",
                "ratio here": f"{1 - steps_of['deci-v1'] / steps_of['sd-v1-5']:.0%} fewer",
                "where": "catalog defaults",
            },
            {
                "claim": "about 3x faster",
                "published": "3x (Infery); 2.95 s / 1.29 s = 2.3x (PyTorch, A10)",
                "ratio here": f"{speedup:.2f}x",
                "where": where,
            },
            {
                "claim": "about 3x faster",
                "published": "UNet work (FLOPs x steps)",
                "ratio here": f"{flop_ratio:.2f}x",
                "where": "counted on the full-size architectures",
            },
            {
                "claim": "66% lower cost per 10k images",
                "published": "66%",
                "ratio here": f"{1 - 1 / speedup:.0%} lower",
                "where": where,
            },
        ]
    ).set_index("claim")
else:
    claims = pd.DataFrame()
    print("Add both 'sd-v1-5' and 'deci-v1' to MODELS to compare the claims.")
claims

# %% [markdown]
# On a GPU at batch 1 the measured speed-up sits near the FLOP ratio when the GPU is busy and below it when kernel
# launches dominate, which is what the fast path (`OPTIMIZE = ["none", "compile"]`) addresses. With a stand-in
# the ratio is of small models on a CPU and says nothing about the real ones.

# %% [markdown]
# ## 6. The machine these numbers belong to
#
# Numbers without their machine mean little: the report is saved with the device, versions and settings.

# %%
path = save_report(report, OUTPUT)
print(f"Saved {path}")
pd.DataFrame(environment_report().rows(), columns=["item", "value"]).set_index("item")

# %% [markdown]
# **Next:** [`03_dreambooth.ipynb`](03_dreambooth.ipynb): teach SD v1.4 your own subject with DreamBooth and LoRA.
