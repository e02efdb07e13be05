# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
# ---

# %% [markdown]
# # 01 · Text-to-image generation with DeciDiffusion and Stable Diffusion
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/your-org/diffusion-tutorials/blob/main/notebooks/01_text_to_image.ipynb)
#
# You will learn to:
#
# - load DeciDiffusion 1.0 natively on current diffusers (no remote code), and SD v1.4/v1.5 and
#   small-stable-diffusion the same way;
# - make results reproducible with seeds, one seed per image;
# - see what the guidance scale does (offline, on the toy model, measured: how many pictures show what their
#   prompt says at each scale), swap the scheduler, and use negative prompts;
# - save images with their prompt, seed, steps and model in the PNG metadata.
#
# `%load_ext autotime` prints how long each cell took.

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
# - **GPU**: recommended (a free Colab T4 is enough: every model here needs about 3-4 GiB in fp16). Without one the
#   notebook runs, slowly with the real models (minutes per image) or quickly offline with `STAND_IN = "toy"`: a
#   small model in DeciDiffusion's (and SD's) pipeline layout, trained on 64 px pictures of one coloured circle,
#   square or triangle. It draws prompts like "a red circle on a gray background" and nothing else; its pictures
#   are marked "toy model (shapes)". `STAND_IN = "tiny"` gives random weights in the real layout (marked "tiny,
#   random weights": noise, only for trying the code).
# - **Downloads**: DeciDiffusion, then SD v1.5, SD v1.4 and small-stable-diffusion for the comparison at the end:
#   about 10 GB in all, once (the table gives each; computed from the published configs).
# - **Time on a T4**: the table's seconds per image are *estimates* computed from each UNet's FLOPs and a
#   published A10 timing (no GPU was available to measure them); with the downloads, plan on 15-20 minutes.
# - **Model cards**: linked in the table; read their licences (CreativeML OpenRAIL-M) before sharing images.

# %%
from nbhelpers.notebook import show_what_to_expect

show_what_to_expect(["deci-v1", "sd-v1-5", "sd-v1-4", "small-sd-v0"])

# %% tags=["parameters"]
# Papermill parameters
MODEL = "deci-v1"  # catalog name, hub id or local folder
OTHER_MODELS = ["sd-v1-5", "sd-v1-4", "small-sd-v0"]  # compared on the same prompt and seed at the end
STAND_IN = None  # None: the real model (unless NBHELPERS_STAND_IN says otherwise); "toy" or "tiny": offline
PROMPTS = ["A photo of an astronaut riding a horse on Mars", "A big owl with bright shinning eyes"]
SEED = 42
NUM_IMAGES = 2  # images per prompt
STEPS = None  # None: the model's default (30 for DeciDiffusion, 50 for SD)
SIZE = None  # image side in px; None: the model's native 512 (64 for a stand-in)
GUIDANCE_SCALES = [1.0, 2.0, 3.0, 7.5, 12.0]
SCHEDULERS_TO_TRY = ["ddim", "euler-a", "dpm++"]
NEGATIVE_PROMPT = "blurry, low quality, deformed, text, watermark"
OUTPUT_DIR = "outputs/01_text_to_image"

# %%
# %load_ext autotime

# %%
import gc

import matplotlib.pyplot as plt
import numpy as np
import torch

from nbhelpers.generation import generate
from nbhelpers.images import image_grid, read_image_metadata, show_images
from nbhelpers.loading import load_pipeline
from nbhelpers.notebook import bar_chart, show_model_banner, with_mark
from nbhelpers.stand_in import resolve_stand_in, stand_in_mark

size = {"height": SIZE, "width": SIZE} if SIZE else {}  # passed to every generate() call below

# %%
# Offline stand-in: the one place this notebook changes for it. The toy model draws one coloured shape on a plain
# background, so it gets prompts of that kind; every picture and chart made from a stand-in is marked.
stand_in = resolve_stand_in(STAND_IN)  # "toy", "tiny" or None (the real model); NBHELPERS_STAND_IN is the default
mark = stand_in_mark(stand_in)
if stand_in == "toy":
    PROMPTS = ["a red circle on a gray background", "a blue triangle on a white background"]
    NEGATIVE_PROMPT = "a red square"

# %% [markdown]
# ## 1. Load DeciDiffusion
#
# `load_pipeline` picks the GPU if there is one (fp16) or the CPU (fp32), builds DeciDiffusion's flexible UNet
# from the repo's `flexible_unet/` folder with nbhelpers' own class, and takes the text encoder, VAE, safety
# checker and the published DDIM v-prediction scheduler from the same repo.
#
# **DeciDiffusion's status.** The recipe on the model card loads the repo's own pipeline code with
# `custom_pipeline="Deci/DeciDiffusion-v1-0"`. That code imports a diffusers module removed in 0.29, and from
# diffusers 0.38 on any hub pipeline code also needs `trust_remote_code=True`, so the recipe fails twice on current
# diffusers. The Azure ML registry copy (`deci-decidiffusion-v1-0`) is retired (2026-07-31, no replacement). The
# weights are still on the hub; `nbhelpers` loads them with its own flexible-UNet class and runs no remote code.

# %%
pipe = load_pipeline(MODEL, stand_in=stand_in)
show_model_banner(pipe)
print(type(pipe).__name__, "with", type(pipe.unet).__name__)
print(f"UNet parameters: {sum(p.numel() for p in pipe.unet.parameters()):,}")

# %% [markdown]
# ### What `load_pipeline("deci-v1")` does, in plain diffusers
#
# Once, without `nbhelpers`' loader: the UNet comes from the repo's `flexible_unet/` folder (the repo's `unet/`
# folder holds a plain SD UNet that the original pipeline threw away), everything else is an ordinary
# `StableDiffusionPipeline`, and the call passes DeciDiffusion's defaults (30 steps, guidance rescale 0.7). Only the
# UNet class comes from `nbhelpers`. Same seed, same picture as `load_pipeline`'s pipeline. (Offline, the
# checkpoint is the stand-in's folder, laid out like the hub repo.) One pipeline is kept in memory at a time.
# diffusers warns that it expected a `UNet2DConditionModel`: the flexible UNet takes the same inputs and returns
# the same output, which is all the pipeline needs.

# %%
from diffusers import StableDiffusionPipeline

from nbhelpers.models.flexible_unet import FlexibleUNet2DConditionModel

if MODEL == "deci-v1":
    ours = generate(pipe, PROMPTS[0], seed=SEED, num_inference_steps=STEPS, **size).images[0]
    dtype, device = pipe.nbhelpers_info.dtype, pipe.device  # float16 on a GPU, float32 on a CPU
    checkpoint = pipe.nbhelpers_info.source  # "Deci/DeciDiffusion-v1-0" (offline: the stand-in's folder)
    del pipe  # one pipeline in memory at a time
    gc.collect()
    unet = FlexibleUNet2DConditionModel.from_pretrained(checkpoint, subfolder="flexible_unet", torch_dtype=dtype)
    plain = StableDiffusionPipeline.from_pretrained(checkpoint, unet=unet, torch_dtype=dtype).to(device)
    plain.set_progress_bar_config(disable=True)
    side = SIZE or (64 if stand_in else 512)
    by_hand = plain(
        PROMPTS[0],
        num_inference_steps=STEPS or 30,
        guidance_rescale=0.7,
        height=side,
        width=side,
        generator=torch.Generator().manual_seed(SEED),
    ).images[0]
    gap = np.abs(np.asarray(by_hand, dtype=int) - np.asarray(ours, dtype=int))
    print(f"plain diffusers vs load_pipeline: max pixel difference {gap.max()}/255")
    show_images([by_hand, ours], [with_mark("plain diffusers", mark), with_mark("load_pipeline", mark)], img_width=256)
    del plain, unet
    gc.collect()
    pipe = load_pipeline(MODEL, stand_in=stand_in)  # back for the rest of the notebook, from the local cache

# %% [markdown]
# ## 2. Generate, reproducibly
#
# Image *i* of a prompt uses seed `SEED + i`, each with its own generator, so any single image can be
# regenerated alone, on any machine of the same kind. All notebooks seed this way, with CPU generators
# (`torch.Generator().manual_seed(seed)`), so a seed gives the same starting noise on a CPU and on any GPU. Alone or
# in a batch, the picture is the same; the pixels may differ by a level or two, because batched kernels round
# differently (more in fp16 on a GPU).

# %%
result = generate(pipe, PROMPTS, seed=SEED, num_images=NUM_IMAGES, num_inference_steps=STEPS, **size)
print(f"{len(result.images)} images in {result.seconds:.1f} s with {result.settings}")
show_images(result.images, result.labels(), img_width=256)

# %%
last = NUM_IMAGES - 1  # the last image of the first prompt, made with seed SEED + last
again = generate(pipe, PROMPTS[0], seed=SEED + last, num_inference_steps=STEPS, **size)
difference = np.abs(np.asarray(again.images[0], dtype=int) - np.asarray(result.images[last], dtype=int))
print(
    f"Image {last} regenerated alone from seed {SEED + last}: max pixel difference {difference.max()}/255, "
    f"mean {difference.mean():.4f}"
)
# Reported, not asserted: how far batched and single kernels round apart depends on the GPU and dtype.
print(
    "Same picture (mean difference below one level)."
    if difference.mean() < 1.0
    else "The pixels differ more than usual: batched and single kernels round differently in "
    f"{pipe.nbhelpers_info.dtype} on {pipe.device}; compare the two images by eye."
)

# %% [markdown]
# ## 3. Guidance scale
#
# Classifier-free guidance mixes the prompt-conditioned and unconditioned predictions:
# `noise = uncond + scale * (cond - uncond)`. Scale 1 ignores the contrast; higher values follow the prompt
# more closely, until colours burn out. Guidance above 1 costs two UNet evaluations per step.

# %%
sweep = [
    generate(pipe, PROMPTS[1], seed=SEED, num_inference_steps=STEPS, guidance_scale=g, **size) for g in GUIDANCE_SCALES
]
show_images([s.images[0] for s in sweep], [with_mark(f"guidance {g}", mark) for g in GUIDANCE_SCALES], img_width=200)
ax = bar_chart(
    [str(g) for g in GUIDANCE_SCALES],
    [s.seconds for s in sweep],
    title=with_mark(f"Time per image by guidance scale ({pipe.device})", mark),
    ylabel="seconds per image",
)
ax.set_xlabel("guidance scale (1 = one UNet pass per step, above 1 = two)")
plt.show()

# %% [markdown]
# With the toy model, "follows the prompt" can be counted: `score_pipeline` draws captions of the kind it was
# trained on ("a red circle on a gray background", ...; here 12 of the 36, every shape, colour and background)
# and reads colour, shape and background back from every picture (`read_scene`). The share of pictures with all
# three words right is the model's adherence. (With the real models this needs a person or a CLIP score; it is
# skipped there.) Measured with the shipped DeciDiffusion-style toy over all 36 captions and two seeds: 64% at
# guidance 1, **71% at 2**, 60% at 3, 38% at 7.5, 32% at 12: a little guidance helps, more costs the shape first
# (colour and background stay right). The SD-style toy, trained with SD v1's schedule, wants more: 18% at 1, 33%
# at 5, 47% at 7.5. The best scale is a property of the model and its training, not a constant: measure it.

# %%
if stand_in == "toy":
    from nbhelpers.toy.evaluate import lesson_scenes, score_pipeline

    scenes = lesson_scenes()[::3]
    adherence = [score_pipeline(pipe, scenes, seeds=[SEED], guidance_scale=g)["all"] for g in GUIDANCE_SCALES]
    ax = bar_chart(
        [str(g) for g in GUIDANCE_SCALES],
        [100 * a for a in adherence],
        annotate_format="{:.0f}%",
        title=with_mark(f"Pictures that show all three words of their prompt ({len(scenes)} prompts)", mark),
        ylabel="colour, shape and background right (%)",
    )
    ax.set_xlabel("guidance scale")
    plt.show()

# %% [markdown]
# ## 4. Swap the scheduler
#
# The scheduler decides how the noise is removed step by step. `swap_scheduler` builds the new one from the old
# one's config, so the model's training settings (for DeciDiffusion: v-prediction, zero terminal SNR, trailing
# timesteps) carry over.

# %%
from nbhelpers.models.schedulers import swap_scheduler

original_scheduler = pipe.scheduler
swapped = []
for name in SCHEDULERS_TO_TRY:
    swap_scheduler(pipe, name)
    swapped.append(generate(pipe, PROMPTS[1], seed=SEED, num_inference_steps=STEPS, **size).images[0])
pipe.scheduler = original_scheduler
show_images(swapped, [with_mark(name, mark) for name in SCHEDULERS_TO_TRY], img_width=200)

# %% [markdown]
# ## 5. Negative prompts
#
# A negative prompt replaces the empty unconditioned prompt, so guidance pushes away from what it describes.

# %%
without = generate(pipe, PROMPTS[0], seed=SEED, num_inference_steps=STEPS, **size)
negative = generate(pipe, PROMPTS[0], seed=SEED, num_inference_steps=STEPS, negative_prompt=NEGATIVE_PROMPT, **size)
show_images(
    without.images + negative.images,
    [with_mark("no negative prompt", mark), with_mark(f"negative: {NEGATIVE_PROMPT}", mark)],
    img_width=256,
)

# %% [markdown]
# ## 6. Save with metadata
#
# Each PNG carries its prompt, seed, steps and model, so a picture can always be traced back and remade.
# Files are written atomically.

# %%
paths = result.save(OUTPUT_DIR)
print(*paths, sep="\n")
read_image_metadata(paths[0])

# %% [markdown]
# ## 7. The other models on the same prompt and seed
#
# SD v1.5 and v1.4 share the architecture (860M-parameter UNet, 50 PNDM steps); small-stable-diffusion is a
# distilled version with one layer per block. Each model is freed before the next loads, so this fits a small GPU.
# (Offline, every SD v1.x name loads the same SD-style toy model, so those pictures are the same model.)

# %%
del pipe
gc.collect()
gallery, labels = [result.images[0]], [with_mark(MODEL, mark)]
for name in OTHER_MODELS:
    other = load_pipeline(name, stand_in=stand_in)
    out = generate(other, PROMPTS[0], seed=SEED, num_inference_steps=STEPS, **size)
    gallery.append(out.images[0])
    labels.append(with_mark(f"{name} ({out.settings['num_inference_steps']} steps, {out.seconds:.1f} s)", mark))
    del other
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
show_images(gallery, labels, img_width=256)
grid = image_grid(gallery, rows=1)
grid.save(f"{OUTPUT_DIR}/models_side_by_side.png")
plt.figure(figsize=(3 * len(gallery), 3.4))
plt.imshow(grid)
plt.title(with_mark(" | ".join([MODEL, *OTHER_MODELS]) + f": seed {SEED}", mark), fontsize=9)
plt.axis("off")
plt.show()

# %% [markdown]
# **Next:** [`02_sd15_vs_decidiffusion.ipynb`](02_sd15_vs_decidiffusion.ipynb) measures the speed difference
# properly and sets DeciDiffusion's published claims beside the measured ratios.
