# %% [markdown]
# # 02 · SD v1.5 vs DeciDiffusion: same prompts, same seeds, measured
#
# DeciDiffusion's claim: SD-v1.5-like images in 30 steps instead of 50, with a cheaper UNet. You will learn to:
#
# - compare both models side by side on the same prompts and seeds;
# - measure latency, throughput and GPU memory properly (synchronised, warmed up, median of repeats, first call
#   apart) with `nbhelpers.perf.benchmark`, and switch on the fast path (`optimize="compile"`);
# - explain the speed-up from parameters and FLOPs: fewer steps times a cheaper step;
# - turn seconds per image into cost per 10,000 images, with your GPU and library versions recorded.
#
# On a GPU the numbers are yours. In tiny mode (offline, CPU) they are timings of toy models: they show the
# method, not the models.

# %% tags=["parameters"]
# Papermill parameters
MODELS = ["sd-v1-5", "deci-v1"]  # add "small-sd-v0" to compare it too
TINY = None  # None: follow NBHELPERS_TINY; True: offline tiny models with random weights
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
from nbhelpers.models.tiny import tiny_requested
from nbhelpers.notebook import bar_chart, show_model_banner
from nbhelpers.perf.benchmark import BenchSettings, run_benchmark, save_report
from nbhelpers.perf.flops import full_size_parameters, model_step_flops

tiny = tiny_requested(TINY)

# %% [markdown]
# ## 1. Side by side
#
# Each model runs with its published defaults: SD v1.5 50 PNDM steps, DeciDiffusion 30 DDIM steps with
# guidance rescale 0.7; guidance scale 7.5 for both. Same prompts, same seeds.

# %%
gallery = {}
for name in MODELS:
    pipe = load_pipeline(name, tiny=TINY)
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
        labels.append(f"{name}, {result.settings['num_inference_steps']} steps, seed {seed}: {prompt[:30]}")
show_images(images, labels, img_width=220)

# %% [markdown]
# ## 2. Measured: latency, throughput, memory
#
# `run_benchmark` times the whole pipeline call and, separately, one UNet step (batch 2 with guidance).
# Each figure is the median of `REPEATS` runs after `WARMUP` untimed calls; the first call is reported
# apart because it pays for compilation and caches. Safety checkers are off for both models.

# %%
settings = BenchSettings(models=MODELS, weights="tiny" if tiny else "hub", optimize=OPTIMIZE,
                         batch_sizes=BATCH_SIZES, warmup=WARMUP, repeats=REPEATS)
report = run_benchmark(settings)
table = pd.DataFrame(report["results"])
print("Weights:", report["weights"], "| device:", report["device"], "| dtype:", report["dtype"])
table[["model", "optimize", "batch_size", "steps", "seconds_per_image", "images_per_second", "unet_step_ms",
       "first_call_seconds", "peak_memory_gib", "max_abs_pixel_difference_vs_first_mode"]].round(4)

# %%
labels = [f"{r.model}\n{r.optimize}, b{r.batch_size}" for r in table.itertuples()]
charts = [("seconds_per_image", "Latency", "s / image"), ("images_per_second", "Throughput", "images / s"),
          ("unet_step_ms", "UNet step (guided)", "ms")]
if table["peak_memory_gib"].notna().all():
    charts.append(("peak_memory_gib", "Peak GPU memory", "GiB"))
fig, axes = plt.subplots(1, len(charts), figsize=(4.5 * len(charts), 3.6))
for ax, (column, title, unit) in zip(axes, charts, strict=True):
    bar_chart(labels, table[column].tolist(), title=title, ylabel=unit, ax=ax)
fig.suptitle(report["weights"], fontsize=9)
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
    rows.append({"model": name, "UNet params (M)": full_size_parameters(name) / 1e6,
                 "GFLOP per guided step": gflop, "steps": spec.num_inference_steps,
                 "TFLOP per image (UNet)": gflop * spec.num_inference_steps / 1e3})
compute = pd.DataFrame(rows).set_index("model")
baseline = compute["TFLOP per image (UNet)"].iloc[0]
compute["compute vs first model"] = compute["TFLOP per image (UNet)"] / baseline
fig, ax = plt.subplots(figsize=(5, 3.2))
bar_chart(compute.index.tolist(), compute["TFLOP per image (UNet)"].tolist(), title="UNet work per 512px image",
          ylabel="TFLOP", ax=ax)
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
# ## 5. The machine these numbers belong to
#
# Numbers without their machine mean little: the report is saved with the device, versions and settings.

# %%
path = save_report(report, OUTPUT)
print(f"Saved {path}")
pd.DataFrame(environment_report().rows(), columns=["item", "value"]).set_index("item")
