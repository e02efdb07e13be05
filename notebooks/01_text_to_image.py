# %% [markdown]
# # 01 · Text-to-image generation with DeciDiffusion and Stable Diffusion
#
# You will learn to:
#
# - load DeciDiffusion 1.0 natively on current diffusers (no remote code), and SD v1.4/v1.5 and
#   small-stable-diffusion the same way;
# - make results reproducible with seeds, one seed per image;
# - see what the guidance scale does, swap the scheduler, and use negative prompts;
# - save images with their prompt, seed, steps and model in the PNG metadata.
#
# `%load_ext autotime` prints how long each cell took.

# %% tags=["parameters"]
# Papermill parameters
MODEL = "deci-v1"  # catalog name, hub id or local folder
OTHER_MODELS = ["sd-v1-5", "sd-v1-4", "small-sd-v0"]  # compared on the same prompt and seed at the end
TINY = None  # None: follow NBHELPERS_TINY; True: offline tiny models with random weights
PROMPTS = ["A photo of an astronaut riding a horse on Mars", "A big owl with bright shinning eyes"]
SEED = 42
NUM_IMAGES = 2  # images per prompt
STEPS = None  # None: the model's default (30 for DeciDiffusion, 50 for SD)
GUIDANCE_SCALES = [1.0, 3.0, 7.5, 12.0]
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
from nbhelpers.notebook import bar_chart, show_model_banner

# %% [markdown]
# ## 1. Load DeciDiffusion
#
# `load_pipeline` picks the GPU if there is one (fp16) or the CPU (fp32), builds DeciDiffusion's flexible UNet
# from the repo's `flexible_unet/` folder with nbhelpers' own class, and takes the text encoder, VAE, safety
# checker and the published DDIM v-prediction scheduler from the same repo.

# %%
pipe = load_pipeline(MODEL, tiny=TINY)
show_model_banner(pipe)
print(type(pipe).__name__, "with", type(pipe.unet).__name__)
print(f"UNet parameters: {sum(p.numel() for p in pipe.unet.parameters()):,}")

# %% [markdown]
# ## 2. Generate, reproducibly
#
# Image *i* of a prompt uses seed `SEED + i`, each with its own generator, so any single image can be
# regenerated alone, on any machine of the same kind. Alone or in a batch, the picture is the same; the pixels
# may differ by a level or two, because batched kernels round differently.

# %%
result = generate(pipe, PROMPTS, seed=SEED, num_images=NUM_IMAGES, num_inference_steps=STEPS)
print(f"{len(result.images)} images in {result.seconds:.1f} s with {result.settings}")
show_images(result.images, result.labels(), img_width=256)

# %%
again = generate(pipe, PROMPTS[0], seed=SEED + 1, num_inference_steps=STEPS)
difference = np.abs(np.asarray(again.images[0], dtype=int) - np.asarray(result.images[1], dtype=int))
print(f"Image 1 regenerated alone from seed {SEED + 1}: max pixel difference {difference.max()}/255, "
      f"mean {difference.mean():.4f}")
assert difference.mean() < 1.0, "the same seed should give the same picture"

# %% [markdown]
# ## 3. Guidance scale
#
# Classifier-free guidance mixes the prompt-conditioned and unconditioned predictions:
# `noise = uncond + scale * (cond - uncond)`. Scale 1 ignores the contrast; higher values follow the prompt
# more closely, until colours burn out. Guidance above 1 costs two UNet evaluations per step.

# %%
sweep = [generate(pipe, PROMPTS[1], seed=SEED, num_inference_steps=STEPS, guidance_scale=g) for g in GUIDANCE_SCALES]
show_images([s.images[0] for s in sweep], [f"guidance {g}" for g in GUIDANCE_SCALES], img_width=200)
bar_chart([str(g) for g in GUIDANCE_SCALES], [s.seconds for s in sweep], title="Time per image by guidance scale",
          ylabel="seconds")
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
    swapped.append(generate(pipe, PROMPTS[1], seed=SEED, num_inference_steps=STEPS).images[0])
pipe.scheduler = original_scheduler
show_images(swapped, SCHEDULERS_TO_TRY, img_width=200)

# %% [markdown]
# ## 5. Negative prompts
#
# A negative prompt replaces the empty unconditioned prompt, so guidance pushes away from what it describes.

# %%
plain = generate(pipe, PROMPTS[0], seed=SEED, num_inference_steps=STEPS)
negative = generate(pipe, PROMPTS[0], seed=SEED, num_inference_steps=STEPS, negative_prompt=NEGATIVE_PROMPT)
show_images(plain.images + negative.images, ["no negative prompt", f"negative: {NEGATIVE_PROMPT}"], img_width=256)

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

# %%
del pipe
gc.collect()
gallery, labels = [result.images[0]], [MODEL]
for name in OTHER_MODELS:
    other = load_pipeline(name, tiny=TINY)
    out = generate(other, PROMPTS[0], seed=SEED)
    gallery.append(out.images[0])
    labels.append(f"{name} ({out.settings['num_inference_steps']} steps, {out.seconds:.1f} s)")
    del other
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
show_images(gallery, labels, img_width=256)
image_grid(gallery, rows=1)

# %% [markdown]
# Next: `02_sd15_vs_decidiffusion.ipynb` measures the speed difference properly.
