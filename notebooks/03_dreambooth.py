# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
# ---

# %% [markdown]
# # 03 · DreamBooth: teach Stable Diffusion v1.4 your subject
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/your-org/diffusion-tutorials/blob/main/notebooks/03_dreambooth.ipynb)
#
# DreamBooth (Ruiz et al., CVPR 2023) fine-tunes a text-to-image model on 3-10 photos of one subject, bound to
# a rare identifier (`sks`), so that "a photo of sks dog in a bucket" draws *your* dog in a bucket. You will
# learn to:
#
# - prepare subject photos (EXIF orientation, resize and centre-crop) and preview them;
# - train LoRA adapters (the default: a few MB, fits a free GPU) or the whole UNet with `nbhelpers.dreambooth`,
#   after a memory plan that picks the memory savers your GPU needs and prints the expected peak;
# - watch a progress bar and the loss curve; small checkpoints let a stopped run resume exactly where it was;
# - compare images before and after training on the same seeds (offline, the toy "shapes" model is trained on a
#   red star, a shape it never saw, and the likeness to a star is measured before and after);
# - save the LoRA (diffusers folder, plus one kohya-layout file for AUTOMATIC1111 and ComfyUI), load it back with
#   `pipe.load_lora_weights`, and draw new scenes;
# - see what the model learned: DAAM heat maps of the identifier `sks` before and after fine-tuning.
#
# The same trainer runs from the command line, on one GPU or several:
# `accelerate launch -m nbhelpers dreambooth --instance_data_dir photos/ --output_dir runs/dog`.
#
# With hub access this notebook uses the public `diffusers/dog-example` photos and SD v1.4, downloaded once (the
# fp16 files; the trained weights are kept in fp32). LoRA at 512 px fits a free Colab T4 with room to spare.
# Offline it uses the trained toy "shapes" model (64 px, marked "toy model (shapes)") and six drawn red stars, a
# shape the toy model never saw; it fine-tunes the whole toy UNet (1.5M parameters, a few minutes on a CPU), because
# LoRA did not teach this small model the star (measured below). With `STAND_IN = "tiny"` it uses a drawn critter and
# the tiny random-weight model instead: the code path is the real one, the pictures are not results and are marked
# "tiny, random weights".

# %%
# Set-up (Colab, Paperspace, a fresh runtime): installs nbhelpers, then what this notebook needs, and says so.
import importlib.util, os, subprocess, sys  # noqa: E401, I001

if importlib.util.find_spec("nbhelpers") is None:  # the project's code: the checkout this notebook is in, or git
    url = os.environ.get("NBHELPERS_REPO_URL", "https://github.com/your-org/diffusion-tutorials")
    source = ".." if os.path.isdir("../nbhelpers") else f"git+{url}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", source], check=True)
from nbhelpers.tutorials.setup import set_up  # noqa: E402

set_up("notebooks,training")  # this notebook's extras: installs what is missing or too old, or says to restart

# %% tags=["parameters"]
# Papermill parameters
MODEL = "sd-v1-4"  # base model: catalog name, hub id or local folder
STAND_IN = None  # None: the real model (unless NBHELPERS_STAND_IN says otherwise); "toy" or "tiny": offline
INSTANCE_DIR = None  # your photos; None: the hub's dog photos (offline: a drawn subject)
INSTANCE_PROMPT = "a photo of sks dog"
IDENTIFIER = "sks"
USE_LORA = True  # False: fine-tune the whole UNet (the memory plan says whether it fits your GPU)
WITH_PRIOR_PRESERVATION = False  # also train on generated "a photo of dog" images, keeping the class prior
NUM_CLASS_IMAGES = 50
STEPS = None  # training steps; None: 400 (600 for the toy stand-in, 30 for the tiny one)
RESOLUTION = None  # None: 512 (64 for a stand-in)
LEARNING_RATE = None  # None: 1e-4 for LoRA, 5e-6 for full fine-tuning (the stand-ins set their own below)
MEMORY = "auto"  # "auto": read the GPU's free memory and pick the savers below; "off": use them as given
MIXED_PRECISION = "auto"  # "auto": fp16 on CUDA, none elsewhere
GRADIENT_CHECKPOINTING = None  # None: when needed
USE_8BIT_ADAM = None  # None: when needed (full fine-tuning; needs bitsandbytes and CUDA)
SEEDS = [0, 1, 2]
NEW_PROMPTS = ["a photo of sks dog in a bucket", "a photo of sks dog on the beach", "a watercolor of sks dog"]
OUTPUT_DIR = "outputs/03_dreambooth"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from nbhelpers.daam import set_seed, trace
from nbhelpers.dreambooth import DreamBoothTrainer
from nbhelpers.dreambooth.config import DreamBoothConfig
from nbhelpers.dreambooth.data import example_subject, load_images
from nbhelpers.images import image_grid, show_images
from nbhelpers.loading import load_pipeline
from nbhelpers.notebook import bar_chart, show_model_banner
from nbhelpers.stand_in import resolve_stand_in, stand_in_mark

# %%
# Offline stand-in: the one place this notebook changes for it. The toy model knows colours and backgrounds but never
# saw a star, so a drawn star is its subject; it learns it by full fine-tuning (LoRA did not teach it: measured, see
# 5.), at the learning rate that worked for its 1.5M-parameter UNet. The tiny one checks the code path in seconds.
stand_in = resolve_stand_in(STAND_IN)  # "toy", "tiny" or None (the real model); NBHELPERS_STAND_IN is the default
mark = f" ({stand_in_mark(stand_in)})" if stand_in else ""  # on every picture and chart made from a stand-in
if stand_in == "toy":
    INSTANCE_PROMPT = "a red sks on a white background"
    NEW_PROMPTS = [
        "a red sks on a black background",
        "a blue sks on a gray background",
        "a yellow sks on a white background",
    ]
    USE_LORA, STEPS, LEARNING_RATE = False, STEPS or 600, LEARNING_RATE or 2e-4
elif stand_in == "tiny":
    STEPS, LEARNING_RATE = STEPS or 30, LEARNING_RATE or (1e-2 if USE_LORA else None)
steps = STEPS or 400
resolution = RESOLUTION or (64 if stand_in else 512)
on_cuda = torch.cuda.is_available()
run_dir = Path(OUTPUT_DIR) / (stand_in or "real")
print(f"stand-in: {stand_in}  LoRA={USE_LORA}  steps={steps}  resolution={resolution}  -> {run_dir}")

# %% [markdown]
# ## 1. The subject photos
#
# Good DreamBooth data is 3-10 sharp photos of the subject alone, from different angles and backgrounds.
# `load_images` applies each photo's EXIF orientation and refuses unreadable files and photos too small for the
# training resolution, naming the file.

# %%
instance_dir = Path(INSTANCE_DIR) if INSTANCE_DIR else example_subject(run_dir / "instance_images", stand_in=stand_in)
photos = load_images(instance_dir, min_side=resolution // 2)
print(f"{len(photos)} photos in {instance_dir}")
show_images(
    photos,
    [f"{i}: {p.width}x{p.height}" + (" (drawn)" if stand_in else "") for i, p in enumerate(photos)],
    img_width=160,
)

# %% [markdown]
# ## 2. Before training
#
# The base model is loaded once, for drawing and for training: on a GPU its fp16 files (half the download); the
# trainer then keeps the weights it trains in fp32 and the frozen ones in fp16. It draws the instance prompt on
# fixed seeds: it has no idea what `sks` is. A DAAM trace of the first seed records where the UNet's
# cross-attention looks for the word `sks`; section 7 compares it with the same trace after training.

# %%
inference_dtype = torch.float16 if on_cuda else torch.float32
pipe = load_pipeline(
    MODEL,
    stand_in=stand_in,
    dtype=inference_dtype,
    safety_checker=False,
    memory_savers="off",
    progress=False,
    **({"variant": "fp16"} if on_cuda and not stand_in else {}),
)
show_model_banner(pipe)
# The tiny UNet attends to text only at coarse sizes: give DAAM a few pixels. The toy one works at its 64 px.
daam_size = resolution if stand_in == "toy" else max(resolution, 128)


def draw(pipe, prompt, seeds, size=None):
    size = size or resolution
    return [
        pipe(prompt, height=size, width=size, generator=torch.Generator("cpu").manual_seed(seed)).images[0]
        for seed in seeds
    ]


def identifier_heat_map(pipe, seed):
    """The image of the instance prompt and the DAAM heat map of the identifier in it."""
    with torch.no_grad(), trace(pipe) as tc:
        image = pipe(INSTANCE_PROMPT, height=daam_size, width=daam_size, generator=set_seed(seed)).images[0]
        heat_map = tc.compute_global_heat_map().compute_word_heat_map(IDENTIFIER)
    return image, heat_map


before = draw(pipe, INSTANCE_PROMPT, SEEDS)
show_images(before, [f"before, seed {s}{mark}" for s in SEEDS], img_width=192)
daam_before = identifier_heat_map(pipe, SEEDS[0])

# %% [markdown]
# ## 3. Plan the memory, then train
#
# `DreamBoothConfig` holds every setting and checks it before anything loads (a learning rate of `inf`, an
# output folder that is a file, a prompt without the identifier are refused with a message). Creating the
# `DreamBoothTrainer` first prints the **memory plan**: with `MEMORY = "auto"` it reads the GPU's free memory,
# counts the bytes of weights, gradients, optimizer state and activations for this mode and resolution, and turns
# on fp16 mixed precision, cached text embeddings, 8-bit Adam and gradient checkpointing only as needed. A run
# that cannot fit stops here with what would fit (LoRA instead of full, a smaller resolution, ...).
#
# Training runs through `accelerate`. Every `checkpointing_steps` a checkpoint of only what training changes
# (the LoRA, its optimizer and scheduler state, RNG and data position) is written atomically, so re-running this
# cell after an interruption continues exactly where it stopped. A loss that turns NaN stops the run and keeps
# the last good checkpoint.

# %%
output_dir = run_dir / ("dreambooth-lora" if USE_LORA else "dreambooth-full")
config = DreamBoothConfig(
    instance_data_dir=str(instance_dir),
    output_dir=str(output_dir),
    model=MODEL,
    stand_in=stand_in,
    instance_prompt=INSTANCE_PROMPT,
    identifier=IDENTIFIER,
    with_prior_preservation=WITH_PRIOR_PRESERVATION,
    num_class_images=NUM_CLASS_IMAGES,
    class_data_dir=str(run_dir / "class_images"),
    resolution=resolution,
    use_lora=USE_LORA,
    learning_rate=LEARNING_RATE,
    max_train_steps=steps,
    memory=MEMORY,
    mixed_precision=MIXED_PRECISION,
    gradient_checkpointing=GRADIENT_CHECKPOINTING,
    use_8bit_adam=USE_8BIT_ADAM,
    checkpointing_steps=max(1, steps // 4),
    validation_prompts=[NEW_PROMPTS[0]],
    validation_steps=max(1, steps // 2),
)
trainer = DreamBoothTrainer(config, pipe=pipe)  # prints the memory plan
trained = sum(p.numel() for p in trainer.trainable_parameters())
total = sum(p.numel() for p in trainer.unet.parameters())
print(f"training {trained:,} of the UNet's {total:,} parameters ({100 * trained / total:.2f}%)")
result = trainer.train()
print(f"step {result.global_step} (resumed from {result.resumed_from}); weights in {result.weights_dir}")
checkpoints = sorted((output_dir / "checkpoints").glob("checkpoint-*"))
if checkpoints:
    files = sorted(checkpoints[-1].iterdir())
    size = sum(f.stat().st_size for f in files)
    print(f"{checkpoints[-1].name}: {size / 2**20:.2f} MiB, only what training changes: {[f.name for f in files]}")

# %% [markdown]
# ## 4. The loss curve
#
# The DreamBooth loss is the noise-prediction error at a random timestep, so single steps are noisy; the moving
# average shows the trend. Validation images rendered during training are in `validation/`.

# %%
steps_logged, losses = map(np.array, zip(*result.losses, strict=True))
window = max(1, len(losses) // 10)
smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(steps_logged, losses, alpha=0.35, label="loss per step")
ax.plot(steps_logged[window - 1 :], smooth, label=f"moving average ({window} steps)")
ax.set_xlabel("training step (optimizer updates)")
ax.set_ylabel("MSE of the noise prediction (unitless)")
ax.set_title("DreamBooth training loss" + mark)
ax.legend()
plt.show()
validation = sorted((output_dir / "validation").glob("*.png"))
if validation:
    show_images([plt.imread(p) for p in validation], [p.name + mark for p in validation], img_width=160)

# %% [markdown]
# ## 5. Save, reload, compare on the same seeds
#
# The LoRA folder holds `pytorch_lora_weights.safetensors` in the diffusers format, which any SD v1.x pipeline
# loads with `pipe.load_lora_weights(folder)`; `lora_kohya.safetensors` beside it has the same weights under
# kohya's key names (`lora_unet_..._to_q.lora_down.weight` and an `.alpha` per layer): copy it to
# AUTOMATIC1111's `models/Lora/` or ComfyUI's `models/loras/`. Here the trained adapter is removed from the
# pipeline and the saved folder loaded back, so the pictures below come from the files. A full fine-tune is a
# whole pipeline folder that `load_pipeline` loads; its UNet is already in `pipe`. The top row is before
# training, the bottom row after, seed by seed.

# %%
pipe.to(dtype=inference_dtype)  # the trained fp32 weights join the frozen ones for drawing
pipe.text_encoder.to(pipe.unet.device)  # cached embeddings kept it off the GPU during training
if USE_LORA:
    pipe.unet.delete_adapters("default")  # the adapter trained in place ...
    pipe.load_lora_weights(result.weights_dir)  # ... and the same one read back from disk
    print("loaded", sorted(p.name for p in result.weights_dir.iterdir()), "; A1111/ComfyUI file:", result.kohya_file)
after = draw(pipe, INSTANCE_PROMPT, SEEDS)
comparison = image_grid(before + after, rows=2, padding=4)
comparison.save(run_dir / "before_after.png")
plt.figure(figsize=(2.5 * len(SEEDS), 5.2))
plt.imshow(comparison)
plt.title(f"'{INSTANCE_PROMPT}': before (top) and after (bottom), seeds {SEEDS}" + ("\n" + mark.strip()) * bool(mark))
plt.axis("off")
plt.show()

# %% [markdown]
# With the toy model the likeness can be measured: `shape_likeness` finds the drawn blob and compares its outline
# with a star stretched over the same box (intersection over union: 1 is the same outline; a circle scores about
# 0.5, a square about 0.4; the soft edges of generated pictures keep even a clear star well below 1). Same
# prompt, same seeds, before and after training. Measured with the shipped SD-style toy model on seeds 0-3: full
# fine-tuning, 600 steps at learning rate 2e-4, took the likeness from 0.46 to 0.55 and draws a five-pointed star
# on every seed; LoRA (rank 4) did not teach it the star, 0.46 to 0.45 after 150 steps at 1e-2 (the shapes
# melted) and 0.47 after 300 steps at 2e-3 (smaller blobs). A model this small has little to adapt: LoRA's
# strength, adapting a large model cheaply, is the real model's case.

# %%
if stand_in == "toy":
    from nbhelpers.toy.evaluate import shape_likeness

    likeness = {
        "before": [shape_likeness(image) for image in before],
        "after": [shape_likeness(image) for image in after],
    }
    print({label: [round(v, 2) for v in values] for label, values in likeness.items()})
    ax = bar_chart(
        list(likeness),
        [float(np.mean(v)) for v in likeness.values()],
        title=f"Likeness to the star, '{INSTANCE_PROMPT}', {len(SEEDS)} seeds{mark}",
        ylabel="IoU with a star",
    )
    ax.set_xlabel("DreamBooth")
    ax.set_ylim(0, 1)
    plt.show()

# %% [markdown]
# ## 6. New scenes
#
# The identifier now means the subject; the rest of the prompt still means what it meant to the base model.

# %%
scenes = [draw(pipe, prompt, SEEDS[:1])[0] for prompt in NEW_PROMPTS]
show_images(scenes, [prompt + mark for prompt in NEW_PROMPTS], img_width=192)

# %% [markdown]
# ## 7. What the model learned: where it looks for `sks`
#
# DAAM (Tang et al., ACL 2023) adds up the UNet's cross-attention to one prompt word over the denoising steps and
# layers, giving a heat map of where that word acted on the image. Before fine-tuning `sks` is a meaningless
# token and its attention is spread out; after it names the subject, its map should follow the subject's shape.
# Same prompt, same seed, same size, before and after. On the tiny random-weight model the maps are as
# meaningless as its pictures: they only show the code path.

# %%
daam_after = identifier_heat_map(pipe, SEEDS[0])
fig, axes = plt.subplots(2, 2, figsize=(7, 7.4))
for row, (label, (image, heat_map)) in zip(axes, [("before", daam_before), ("after", daam_after)], strict=True):
    row[0].imshow(image)
    row[0].set_title(f"{label} fine-tuning\n{mark.strip()}", fontsize=9)
    row[0].set_axis_off()
    heat_map.plot_overlay(image, ax=row[1])
    row[1].set_title(f"DAAM heat map of '{IDENTIFIER}', {label}\n{mark.strip()}", fontsize=9)
fig.suptitle(f"'{INSTANCE_PROMPT}', seed {SEEDS[0]}, {daam_size}x{daam_size} px")
fig.tight_layout()
fig.savefig(run_dir / "identifier_heat_maps.png")
plt.show()
