# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
# ---

# %% [markdown]
# # 02 · SD v1.5 vs DeciDiffusion: is it the same quality in fewer steps?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/your-org/diffusion-tutorials/blob/main/notebooks/02_sd15_vs_decidiffusion.ipynb)
#
# DeciDiffusion's claim: SD-v1.5-like images in 30 steps instead of 50, with a cheaper UNet. You will learn to:
#
# - test the part of that claim a program can check: every setting on the same prompts and seeds, scored for
#   prompt alignment (CLIP score, with a 95% interval), against measured seconds per image: DeciDiffusion at 30
#   steps, SD v1.5 at 50 and at 30, SD v1.5 with DPM++ at 20, and SD v1.5's few-step fast paths (section 5);
# - measure latency, throughput and GPU memory properly (synchronised, warmed up, median of repeats, first call
#   apart) with `nbhelpers.perf.benchmark`, and switch on the compiled fast path (`optimize="compile"`);
# - explain where DeciDiffusion's step is cheaper: parameters and FLOPs per resolution level (parameters are not
#   compute);
# - turn seconds per image into cost per 10,000 images, and set the published claims beside what you measured.
#
# On a GPU the numbers are yours. With a stand-in (offline, CPU) they are of small models: they show the method,
# not the models.

# %%
# Set-up (Colab, Paperspace, a fresh runtime): installs nbhelpers, then what this notebook needs, and says so.
import importlib.util, os, subprocess, sys  # noqa: E401, I001

if importlib.util.find_spec("nbhelpers") is None:  # the project's code: the checkout this notebook is in, or git
    url = os.environ.get("NBHELPERS_REPO_URL", "https://github.com/your-org/diffusion-tutorials")
    source = ".." if os.path.isdir("../nbhelpers") else f"git+{url}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", source], check=True)
from nbhelpers.tutorials.setup import set_up  # noqa: E402

set_up("notebooks,quality,training")  # this notebook's extras: installs what is missing or too old, or says to restart

# %% [markdown]
# ## What to expect
#
# - **GPU**: needed for numbers that mean anything (a free Colab T4 works). On a CPU the notebook runs, but the
#   timings are of a CPU, and with a stand-in (`STAND_IN = "toy"` or `"tiny"`) of small models (every chart and
#   picture then says which).
# - **Downloads**: SD v1.5 and DeciDiffusion (sizes in the table below, computed from the configs), the three
#   few-step adapter files (section 5 says what they are), and the CLIP model that scores the pictures.
# - **Time on a T4**: the quality grid makes a picture per prompt for every setting and the benchmark runs each model
#   a few times; a cell below the parameters prints an *estimate* for the grid (scaled by FLOPs from a published SD
#   v1.5 T4 timing, not measured here). `OPTIMIZE = ["none", "compile"]` adds about a minute of compilation per
#   model on an H100 (this project's benchmark, benchmarks/README.md); a T4 may take longer.
# - **Model cards and licences**: in the table.

# %%
from nbhelpers.notebook import show_what_to_expect

show_what_to_expect(["sd-v1-5", "deci-v1"])

# %% tags=["parameters"]
# Papermill parameters
MODELS = ["sd-v1-5", "deci-v1"]  # benchmarked; add "small-sd-v0" to compare it too
STAND_IN = None  # None: the real models (unless NBHELPERS_STAND_IN says otherwise); "toy" or "tiny": offline
QUALITY_PROMPT_SET = "parti"  # a shipped prompt set: "parti" (48 PartiPrompts, 4 per category) or "diffusers-eval"
QUALITY_PROMPT_STRIDE = 4  # every 4th prompt: 12 of the 48, one per category; 1 for the whole set
QUALITY_SEEDS = [0]  # one picture per prompt and seed
QUALITY_BATCH = 1  # prompts per pipeline call; seconds per image are measured at this batch size
COMPARE_FAST_PATHS = ["lcm-lora", "hyper-sd-cfg", "tcd-lora"]  # SD v1.5's few-step fast paths; [] to skip them
CLIP_BACKBONE = None  # None: openai/clip-vit-large-patch14; "openai/clip-vit-base-patch16" as diffusers' docs use
SHOW_PROMPTS = 2  # prompts shown side by side, every setting
OPTIMIZE = ["none"]  # on a CUDA GPU try ["none", "compile"]: the first compiled call compiles (H100: about a minute)
BATCH_SIZES = [1]
WARMUP = 2
REPEATS = 3
DOLLARS_PER_HOUR = 1.10  # an example price, not a quote: put what your GPU costs per hour; cost = s/image x price
OUTPUT = "outputs/02_compare/bench.json"

# %%
import gc
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from nbhelpers.catalog import get_spec
from nbhelpers.environment import environment_report
from nbhelpers.generation import generate
from nbhelpers.images import show_images
from nbhelpers.loading import load_pipeline
from nbhelpers.models.components import build_unet
from nbhelpers.notebook import bar_chart, with_mark
from nbhelpers.perf.benchmark import BenchSettings, run_benchmark, save_report
from nbhelpers.perf.fast_paths import FAST_PATHS, FastPathError, check_adapter_fits
from nbhelpers.perf.few_step import Setting, comparison_settings
from nbhelpers.perf.flops import (
    ATTENTION,
    full_size_component_parameters,
    model_step_flops,
    model_work_by_level,
)
from nbhelpers.quality import ClipScorer, load_prompt_set, summarise
from nbhelpers.stand_in import resolve_stand_in, stand_in_mark
from nbhelpers.toy.evaluate import read_scene
from nbhelpers.toy.shapes import Scene
from nbhelpers.tutorials.expectations import t4_seconds_per_image

# %%
# Offline stand-in: the one place this notebook changes for it. The toy models draw one coloured shape on a plain
# background, so they get the toy captions (every 3rd: 12, each colour, shape and background), one call for them
# all, a shorter benchmark, and are scored by the toy picture reader (is the colour, shape and background right?),
# which also shows how many steps each toy needs; the CLIP code still runs, on a tiny random CLIP (section 2 prints
# its meaningless scores apart). No few-step LoRA exists for the toys: section 5 runs LCM-LoRA's code on the tiny
# stand-in instead. Every picture and chart made from a stand-in is marked.
stand_in = resolve_stand_in(STAND_IN)  # "toy", "tiny" or None (the real models); NBHELPERS_STAND_IN is the default
mark = stand_in_mark(stand_in)
QUALITY_MEASURE = "clip"  # the CLIP score; with a stand-in backbone its numbers mean nothing
if stand_in == "toy":
    QUALITY_PROMPT_SET, QUALITY_PROMPT_STRIDE, QUALITY_BATCH = "toy-shapes", 3, 12
    QUALITY_MEASURE = "toy reader"
    COMPARE_FAST_PATHS = []
    WARMUP, REPEATS = 1, 2

# %%
prompt_set = load_prompt_set(QUALITY_PROMPT_SET)
prompt_rows = list(prompt_set.rows[::QUALITY_PROMPT_STRIDE])
prompts = [row["prompt"] for row in prompt_rows]
settings = comparison_settings(COMPARE_FAST_PATHS)
pictures_per_setting = len(prompts) * len(QUALITY_SEEDS)
t4_minutes = sum(t4_seconds_per_image(s.model, s.unet_passes // 2) for s in settings) * pictures_per_setting / 60
print(f"{len(settings)} settings x {len(prompts)} prompts ({prompt_set.name}) x {len(QUALITY_SEEDS)} seed(s).")
print(
    f"Estimated T4 time for the grid (scaled by UNet FLOPs from a published T4 time, not measured): "
    f"{t4_minutes:.0f} min"
)
pd.DataFrame([s.row() for s in settings]).set_index("setting")

# %% [markdown]
# ## 1. The same prompts and seeds, every setting
#
# Fewer steps only save anything if the pictures hold up, so each setting makes a picture for every prompt and seed,
# and the CLIP score says how well each picture matches its prompt. SD v1.5 at 30 steps and with DPM++ at 20 are the
# controls: if they score like SD v1.5 at 50, fewer steps were never DeciDiffusion's advantage. The loop below is
# the whole mechanism; `nbhelpers evaluate` runs it over a full prompt set.

# %% [markdown]
# ### What the CLIP score can and cannot see
#
# The CLIP score of a picture is `100 * max(cos, 0)` of the angle between CLIP's embeddings of the picture and of its
# prompt: it measures *prompt alignment* as CLIP sees it, not aesthetics, realism, artefacts or variety, and CLIP
# itself misreads counts, left and right, and negation. Its scale depends on the CLIP model (the backbone):
# diffusers' published SD scores (printed below) use a smaller CLIP than this notebook's default, so compare scores
# of one backbone only. DeciDiffusion's "same quality" rests on other evidence, FID and a user study (section 7), of
# which a CLIP score can test only the prompt-alignment part.

# %%
scorer = ClipScorer(CLIP_BACKBONE, stand_in=stand_in)  # with a stand-in: the tiny random CLIP, labelled meaningless
anchors = load_prompt_set("diffusers-eval").published  # diffusers' "Evaluating Diffusion Models" page
print(f"Published CLIP scores with {anchors.backbone}: {anchors.scores} ({anchors.source})")
print(with_mark(f"This notebook scores with {scorer.backbone.name}", mark))

# %%
records, pictures = [], {}
for setting in settings:
    # No safety checker: a blacked-out picture would count as the model's failure.
    pipe = setting.load(stand_in=stand_in, safety_checker=False, progress=False)
    generate(pipe, prompts[0], num_inference_steps=2)  # warm-up: first-call costs stay out of the timing
    for seed in QUALITY_SEEDS:
        for start in range(0, len(prompts), QUALITY_BATCH):
            result = generate(pipe, prompts[start : start + QUALITY_BATCH], seed=seed, **setting.generation_kwargs())
            clip = scorer.score(result.images, result.prompts)
            pictures.setdefault(setting.label, []).extend(result.images)
            for offset, (image, score) in enumerate(zip(result.images, clip.scores, strict=True)):
                row = prompt_rows[start + offset]
                records.append(
                    {
                        "setting": setting.label,
                        "prompt": start + offset,
                        "seed": seed,
                        "seconds": result.seconds / len(result.images),
                        "clip_score": score,
                        # toy prompts only: 1 when the toy picture reader sees the prompt's colour, shape, background
                        "toy_right": float(
                            all(
                                read_scene(image)
                                .matches(Scene(row["shape"], row["colour"], row["background"]))
                                .values()
                            )
                        )
                        if "shape" in row
                        else None,
                    }
                )
    print(f"{setting.label}: {len(pictures[setting.label])} pictures, model {result.model}")
    del pipe
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
grid = pd.DataFrame(records)

# %%
shown = [(label, index) for index in range(SHOW_PROMPTS) for label in pictures]
show_images(
    [pictures[label][index] for label, index in shown],
    [with_mark(f"{label}: {prompts[index][:40]}", mark) for label, index in shown],
    img_width=160,
)

# %% [markdown]
# ## 2. Prompt alignment against seconds per image
#
# Each point is one setting: its mean score with a 95% bootstrap interval, against the seconds per image this
# machine measured for it. Intervals that overlap mean the prompts here cannot tell the settings apart; more
# prompts (`QUALITY_PROMPT_STRIDE = 1`, or `nbhelpers evaluate`) narrow them.

# %%
quality_column = "toy_right" if QUALITY_MEASURE == "toy reader" else "clip_score"
quality_label = "toy picture reader: share of pictures right" if quality_column == "toy_right" else clip.label
summary = pd.DataFrame(
    [
        {
            "setting": setting.label,
            "UNet passes per image": setting.unet_passes,
            "seconds per image": grid[grid.setting == setting.label].seconds.mean(),
            "prompt alignment": summarise(grid[grid.setting == setting.label][quality_column]),
        }
        for setting in settings
    ]
).set_index("setting")
fig, ax = plt.subplots(figsize=(10, 4.5))
for (label, row), marker in zip(summary.iterrows(), "osD^vP*X", strict=False):
    q = row["prompt alignment"]
    error = [[q.mean - q.low], [q.high - q.mean]] if q.n > 1 else None
    ax.errorbar(row["seconds per image"], q.mean, yerr=error, fmt=marker, capsize=4, label=label)
log_scale = summary["seconds per image"].max() > 5 * summary["seconds per image"].min()
if log_scale:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
ax.set_xlabel(f"seconds per image (measured here, batch of {QUALITY_BATCH}{', log scale' if log_scale else ''})")
ax.set_ylabel(textwrap.fill(quality_label, 45))
ax.set_title(
    with_mark(f"Prompt alignment against latency, {pictures_per_setting} pictures per setting", mark), fontsize=10
)
ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="setting (mean, 95% interval)")
fig.tight_layout()
plt.show()
summary.assign(**{"prompt alignment": summary["prompt alignment"].astype(str)}).round(3)

# %%
# Paired differences from SD v1.5 at 50 steps, picture by picture (same prompt, same seed): a difference whose
# interval holds 0 is not one these prompts can see. Settings are picked by their labels, not their places.
SD_50, SD_30, DECI_30 = Setting("sd-v1-5").label, Setting("sd-v1-5", steps=30).label, Setting("deci-v1").label
reference = grid[grid.setting == SD_50].set_index(["prompt", "seed"])[quality_column]
differences = {
    s.label: summarise(grid[grid.setting == s.label].set_index(["prompt", "seed"])[quality_column] - reference)
    for s in settings
    if s.label != SD_50
}
pd.DataFrame({"difference from SD v1.5 at 50 steps": {k: str(v) for k, v in differences.items()}})

# %%
# Offline only: the toy run scores with the toy picture reader, but the CLIP code ran too, on the tiny random CLIP.
if quality_column == "toy_right":
    print(with_mark(clip.label, mark))
    print(grid.groupby("setting", sort=False).clip_score.mean().round(2).to_string())

# %% [markdown]
# ## 3. Measured: latency, throughput, memory
#
# `run_benchmark` times the whole pipeline call and, separately, one UNet step (batch 2 with guidance). Each figure
# is the median of `REPEATS` runs after `WARMUP` untimed calls; the first call is reported apart because it pays
# for compilation and caches. `share_of_peak` is the UNet's FLOPs per step over its measured time, as a share of
# the GPU's measured matmul peak: high means the GPU is busy computing.

# %%
# Offline the timings are of the stand-in models (the report says so): they time the code path, not the real models.
bench_settings = BenchSettings(
    models=MODELS,
    weights="hub",
    stand_in=stand_in or "none",
    optimize=OPTIMIZE,
    batch_sizes=BATCH_SIZES,
    warmup=WARMUP,
    repeats=REPEATS,
)
report = run_benchmark(bench_settings)
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
        "share_of_peak",
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
# ## 4. Where DeciDiffusion's step is cheaper
#
# Counted on the real architectures on PyTorch's meta device (no weights, no memory, works offline): each UNet's
# parameters and the FLOPs of one guided step at 512x512, split by the resolution the work runs at (latents of
# 64x64 down to 8x8) and into attention and convolution. The two UNets share their convolutions at 64x64 and 32x32;
# they differ in where they attend.

# %%
work = pd.concat([pd.DataFrame(model_work_by_level(name)).assign(model=name) for name in ("sd-v1-5", "deci-v1")])
work = work[work.level != "-"]  # the time embedding: 2.1M parameters, no spatial work
levels = ["64x64", "32x32", "16x16", "8x8"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, (column, scale, unit) in zip(
    axes, [("parameters", 1e6, "parameters (M)"), ("flops", 1e9, "GFLOP")], strict=True
):
    for offset, name in ((-0.2, "sd-v1-5"), (0.2, "deci-v1")):
        bottom = pd.Series(0.0, index=levels)
        for kind, hatch in (("convolution", ""), (ATTENTION, "//")):
            part = work[(work.model == name) & (work.kind == kind)].set_index("level")[column].reindex(levels)
            values = part.fillna(0) / scale
            color = "tab:blue" if name == "sd-v1-5" else "tab:orange"
            ax.bar([i + offset for i in range(len(levels))], values, 0.4, bottom=bottom, color=color, hatch=hatch)
            bottom += values
    ax.set_xticks(range(len(levels)), [f"{lv} latents" for lv in levels])
    ax.set_xlabel("resolution level (512 px image)")
    ax.set_ylabel(unit)
axes[0].set_title("UNet parameters per level: SD v1.5 (blue), DeciDiffusion (orange)", fontsize=9)
axes[1].set_title("FLOPs of one guided step per level (hatched: attention)", fontsize=9)
axes[1].set_ylabel("GFLOP per guided step")
fig.tight_layout()
plt.show()
by_level = work.pivot_table(index=["level", "kind"], columns="model", values="flops", aggfunc="sum") / 1e9
by_level.reindex(levels, level=0).round(1)

# %% [markdown]
# DeciDiffusion has no attention at 64x64, the level where attention is dearest (every one of the 64x64 positions
# attends to every other), and it puts more attention at 16x16 instead. The cell below computes what that buys per
# step, and how the UNet work per image splits into a cheaper step and fewer steps.

# %%
sd_gflop, deci_gflop = model_step_flops("sd-v1-5") / 1e9, model_step_flops("deci-v1") / 1e9
saved = sd_gflop - deci_gflop
top_attention = by_level.loc[("64x64", ATTENTION), "sd-v1-5"]
sd_steps, deci_steps = get_spec("sd-v1-5").num_inference_steps, get_spec("deci-v1").num_inference_steps
architecture, fewer_steps = sd_gflop / deci_gflop, sd_steps / deci_steps
print(f"Per guided step: SD v1.5 {sd_gflop:.1f} GFLOP, DeciDiffusion {deci_gflop:.1f}: {saved:.1f} GFLOP saved;")
print(f"SD v1.5's attention at 64x64 alone costs {top_attention:.1f} GFLOP.")
print(
    f"UNet work per image: {architecture:.2f}x from the architecture x {fewer_steps:.2f}x from {deci_steps} instead "
    f"of {sd_steps} steps "
    f"= {architecture * fewer_steps:.2f}x. The second factor counts only if SD v1.5 at 30 steps is worse than at 50 "
    "(section 2)."
)

# %% [markdown]
# Parameters are not compute: the work follows the resolution a layer runs at, not its weights, so the two UNets'
# parameter counts differ far less than their FLOPs (computed below). The published sizes are two different things:
# the UNet alone ("820 million") and the whole model with the CLIP text encoder and VAE it shares with SD v1.5
# ("1.02B", against SD v1.5's "1.07B").

# %%
components = pd.DataFrame({name: full_size_component_parameters(name) for name in ("sd-v1-5", "deci-v1")}).T
components["whole model"] = components.sum(axis=1)
fewer_parameters = 1 - components.loc["deci-v1", "unet"] / components.loc["sd-v1-5", "unet"]
print(
    f"DeciDiffusion's UNet: {fewer_parameters:.0%} fewer parameters than SD v1.5's, "
    f"{1 - 1 / architecture:.0%} fewer FLOPs per step"
)
(components / 1e6).round(1).rename(columns=lambda c: f"{c} (M)")

# %% [markdown]
# What limits batch-1 generation depends on the GPU. A T4 needs tens of milliseconds of arithmetic per guided SD v1.5
# step even at its peak, so the GPU, not Python launching the step's kernels, sets the pace: generation is
# compute-bound there. On a fast GPU such as an H100 the same arithmetic takes under two milliseconds, launching the
# kernels one by one from Python takes longer than running them, and that is what CUDA graphs
# (`optimize="compile"`) remove; on your GPU, `share_of_peak` in section 3 says which case you are in.

# %%
T4_FP16_TFLOPS, H100_FP16_TFLOPS = 65.0, 989.4  # dense fp16 tensor-core peaks, NVIDIA data sheets (H100 SXM)
for gpu, tflops in (("T4", T4_FP16_TFLOPS), ("H100", H100_FP16_TFLOPS)):
    print(f"{gpu}: at least {sd_gflop / tflops:.1f} ms of arithmetic per guided SD v1.5 step, at its peak")
t4_step_ms = t4_seconds_per_image("sd-v1-5", 1) * 1e3
print(f"T4, scaled from the published SD v1.5 T4 time (not measured here): about {t4_step_ms:.0f} ms per guided step")

# %% [markdown]
# ## 5. The few-step fast paths for SD v1.5, and why DeciDiffusion has none
#
# Each fast path is a *LoRA* (low-rank adaptation: small matrices added to some of the UNet's layers; notebook 03
# trains one) *distilled* from SD v1.5, that is trained to make in a few steps what SD v1.5 makes in many. LCM-LoRA
# comes from latent consistency models (LCM), which learn to jump from any noise level straight to the clean latent;
# TCD (trajectory consistency distillation) refines that idea to lose less detail; Hyper-SD (ByteDance) distils the
# trajectory in segments, here in its variant that keeps classifier-free guidance. `load_pipeline("sd-v1-5",
# fast_path="lcm-lora")` fuses one into the UNet (diffusers' `load_lora_weights` and `fuse_lora`) and sets the
# scheduler, steps and guidance its authors publish.

# %% [markdown]
# Without guidance a step is one UNet pass instead of two (the table's UNet passes per image), and section 2 shows
# what the few steps cost in prompt alignment. The adapters change SD v1.5's layers by name, and DeciDiffusion's UNet
# has other names and shapes, so none of them fits it.

# %%
pd.DataFrame([path.row() for path in FAST_PATHS.values()]).set_index("fast path")

# %%
# Checked on the full-size architectures on the meta device: the adapters' layers against each UNet's.
with torch.device("meta"):
    check_adapter_fits(build_unet(get_spec("sd-v1-5")))
    print("SD v1.5: every layer the adapters change is there.")
    try:
        check_adapter_fits(build_unet(get_spec("deci-v1")))
    except FastPathError as err:
        print(f"DeciDiffusion: {err}")

# %%
# Offline only: no few-step adapter exists for the toy models, so LCM-LoRA's code runs here on the tiny stand-in
# instead (random weights and random LoRA files in the real layout: the picture is noise). Real runs skip it.
if stand_in is not None and "lcm-lora" not in COMPARE_FAST_PATHS:
    tiny = load_pipeline("sd-v1-5", stand_in="tiny", fast_path="lcm-lora", safety_checker=False, progress=False)
    result = generate(tiny, "a red circle on a white background")
    print(result.model, type(tiny.scheduler).__name__, result.settings)
    steps_run = result.settings["num_inference_steps"]
    show_images(
        result.images, [with_mark(f"SD v1.5 + LCM-LoRA, {steps_run} steps", stand_in_mark("tiny"))], img_width=160
    )
    del tiny

# %% [markdown]
# ## 6. Cost per 10,000 images
#
# cost = seconds per image x 10,000 / 3600 x price per hour, using the benchmark's measured medians. The same sum
# applies to the quality grid's settings, with section 2's seconds per image.

# %%
cost = table[["model", "optimize", "batch_size", "seconds_per_image"]].copy()
cost["GPU hours per 10k images"] = cost["seconds_per_image"] * 10_000 / 3600
cost["$ per 10k images"] = cost["GPU hours per 10k images"] * DOLLARS_PER_HOUR
print(f"At ${DOLLARS_PER_HOUR:.2f}/hour on {report['device']} ({report['weights']}):")
cost.round(3)

# %% [markdown]
# ## 7. The published claims beside what was measured
#
# DeciDiffusion's announcement makes three claims against SD v1.5. For "40% fewer steps" the model card's evidence
# is that its images after 30 iterations "achieve comparable FID scores" to SD v1.5's after 50 (no value published)
# and a user study; FID (Fréchet inception distance) compares the statistics of an image classifier's (Inception's)
# features over many generated pictures with those over real photos, lower meaning closer. Here only the
# prompt-alignment part can be measured (section 2). For speed, Deci measured "3x" with its own Infery runtime, and
# the card's PyTorch figures on an A10 (fp16, 512 px) are 2.95 s for SD v1.5 at 50 steps and 1.29 s for
# DeciDiffusion at 30.

# %%
where_quality = with_mark(f"this notebook, {quality_label}, {pictures_per_setting} pictures per setting", mark)
a10_sd, a10_deci = 2.95, 1.29  # published: the model card's PyTorch fp16 seconds per image on an A10
claims = [
    {
        "claim": "40% fewer steps, same quality",
        "published": "30 vs 50 steps: 'comparable FID' (no value published); user study (30 vs 50 steps): "
        "aesthetics preferred 41.1% vs 30.5% (26.3% on par), prompt alignment 20.8% vs 18.8% (39.1% on par)",
        "measured or counted here": f"prompt alignment only: DeciDiffusion 30 steps minus SD v1.5 50 steps: "
        f"{differences[DECI_30]}; SD v1.5 30 steps minus 50: {differences[SD_30]}",
        "where": where_quality,
    },
    {
        "claim": "about 3x faster",
        "published": "about 3x (Deci's Infery runtime)",
        "measured or counted here": f"counted, UNet work per image: {architecture:.2f}x per step x "
        f"{fewer_steps:.2f}x fewer steps = {architecture * fewer_steps:.2f}x",
        "where": "FLOPs of the full-size architectures (section 4), no GPU needed",
    },
]
if {"sd-v1-5", "deci-v1"} <= set(MODELS):
    first_setting = (table["optimize"] == OPTIMIZE[0]) & (table["batch_size"] == BATCH_SIZES[0])
    seconds = table[first_setting].set_index("model")["seconds_per_image"]
    speedup = seconds["sd-v1-5"] / seconds["deci-v1"]
    where = with_mark(f"this notebook, {report['device']}, {report['weights']}", mark)
    claims += [
        {
            "claim": "about 3x faster",
            "published": f"3x (Infery); {a10_sd} s / {a10_deci} s = {a10_sd / a10_deci:.1f}x (PyTorch, A10)",
            "measured or counted here": f"measured: {speedup:.2f}x",
            "where": where,
        },
        {
            "claim": "66% lower cost per 10k images",
            "published": "66%",
            "measured or counted here": f"measured: {1 - 1 / speedup:.0%} lower",
            "where": where,
        },
    ]
else:
    print("Add both 'sd-v1-5' and 'deci-v1' to MODELS to compare the speed claims.")
pd.DataFrame(claims).set_index("claim")

# %% [markdown]
# Read the first row with its intervals: if SD v1.5 at 30 steps scores like SD v1.5 at 50, the step count was never
# the saving, and the honest comparison is DeciDiffusion against SD v1.5 at equal steps (the architecture's share
# above). The user study's aesthetics result is one no CLIP score can check: that takes people, or FID over
# thousands of pictures.

# %% [markdown]
# ## 8. The machine these numbers belong to
#
# Numbers without their machine mean little. The benchmark's report is saved with the device, library versions and
# settings.

# %%
path = save_report(report, OUTPUT)
print(f"Saved {path}")
pd.DataFrame(environment_report().rows(), columns=["item", "value"]).set_index("item")

# %% [markdown]
# **Next:** [`03_dreambooth.ipynb`](03_dreambooth.ipynb): teach SD v1.4 your own subject with DreamBooth and LoRA.
