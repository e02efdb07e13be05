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
# DreamBooth (Ruiz et al., CVPR 2023) fine-tunes a text-to-image model on a few photos of one subject (3-5 in the
# diffusers DreamBooth guide), bound to a rare identifier (`sks`), so that "a photo of sks dog in a bucket" draws
# *your* dog in a bucket. You will learn to:
#
# - prepare subject photos (yours, uploaded on Colab, or the example dog) and choose the identifier;
# - compute the DreamBooth loss by hand and run training steps yourself, then let `trainer.train()` run the rest;
# - size LoRA (`W + (alpha/r)·B·A`) and read the memory plan that fits a run to your GPU;
# - compare pictures before and after training on the same seeds, and see language drift and how prior
#   preservation prevents it;
# - save the LoRA for diffusers and for AUTOMATIC1111/ComfyUI, load it back, draw new scenes, and see with DAAM
#   heat maps where the model looks for `sks`.
#
# The same trainer runs from the command line, on one GPU or several:
# `accelerate launch -m nbhelpers dreambooth --instance_data_dir photos/ --output_dir runs/dog`.
#
# With hub access this notebook uses SD v1.4 and the public `diffusers/dog-example` photos (LoRA at 512 px fits a
# free Colab T4). **On Colab, section 1 waits for you to upload photos** (Cancel: the example dog), so "Run all"
# stops there until you answer; `UPLOAD_PHOTOS = False` skips the question. Offline it uses the trained toy
# "shapes" model, marked "toy model (shapes)", taught a red star; `STAND_IN = "tiny"` only checks the code path.

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
INSTANCE_DIR = None  # your photos; None: uploaded ones (Colab) or the hub's dog photos (offline: a drawn subject)
UPLOAD_PHOTOS = True  # on Colab: section 1 waits for your photos (Cancel: the example photos); False: no question
INSTANCE_PROMPT = "a photo of sks dog"
IDENTIFIER = "sks"
CLASS_PROMPT = None  # the subject's class; None: the instance prompt without the identifier ("a photo of dog")
USE_LORA = True  # False: fine-tune the whole UNet (the memory plan says whether it fits your GPU)
WITH_PRIOR_PRESERVATION = False  # also train on generated class images, keeping the class prior
COMPARE_PRIOR_PRESERVATION = True  # section 7 trains once more with the other choice, for the comparison
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

# %% [markdown]
# ## What to expect
#
# - **GPU**: needed for the real model (a free Colab T4 trains LoRA at 512 px; section 5's memory plan says what fits
#   your GPU). Without one, run offline with `STAND_IN = "toy"` in minutes.
# - **Downloads**: SD v1.4 in fp16 (the table's size includes the safety checker, which this notebook does not load)
#   and the five `diffusers/dog-example` photos, unless you bring yours.
# - **Time on a T4**: the second table adds up this run's parts from your settings above. With
#   `COMPARE_PRIOR_PRESERVATION` the model also generates `NUM_CLASS_IMAGES` class pictures at 512 px and trains a
#   second time. The figures are *estimates*, not measurements (the note under the first table says how they are
#   made); training times are lower bounds.

# %%
import pandas as pd
from IPython.display import display

from nbhelpers.notebook import dreambooth_t4_rows, show_what_to_expect

show_what_to_expect(["sd-v1-4"])
# pictures drawn at 512 px: before and after training (instance and class prompt, each seed), the comparison run's,
# the new scenes, two DAAM traces and the two validation pictures
drawn = 4 * len(SEEDS) + 2 * len(SEEDS) * COMPARE_PRIOR_PRESERVATION + len(NEW_PROMPTS) + 2 + 2
t4_rows = dreambooth_t4_rows(
    "sd-v1-4",
    steps=STEPS or 400,  # the real model's default number of training steps
    pictures=drawn,
    prior_preservation=WITH_PRIOR_PRESERVATION,
    compare_prior_preservation=COMPARE_PRIOR_PRESERVATION,
    class_images=NUM_CLASS_IMAGES,
)
display(pd.DataFrame(t4_rows).set_index("part"))

# %%
import dataclasses
import gc
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from nbhelpers.daam import set_seed, trace
from nbhelpers.device import peak_memory_bytes, reset_peak_memory
from nbhelpers.dreambooth import DreamBoothTrainer, plan_memory
from nbhelpers.dreambooth.config import DreamBoothConfig
from nbhelpers.dreambooth.data import example_subject, load_images, save_uploaded_photos
from nbhelpers.dreambooth.memory_plan import GIB, T4_USABLE_BYTES, USABLE_SHARE, lora_targets
from nbhelpers.images import image_grid, show_images
from nbhelpers.loading import load_pipeline
from nbhelpers.notebook import bar_chart, show_model_banner
from nbhelpers.stand_in import resolve_stand_in, stand_in_mark

# %%
# Offline stand-in: the one place this notebook changes for it. The toy model knows colours and backgrounds but never
# saw a star, so a drawn star is its subject; it learns it by full fine-tuning (the project's record, section 6's
# offline-only part; LoRA did not teach it in the project's trials, which are not recorded), at the learning rate
# that worked for its 1.5M-parameter UNet. Its class is a shape it draws reliably, a red triangle. The tiny one
# checks the code path in seconds; its UNet attends to text only at coarse sizes, so DAAM gets a few more pixels.
# The toy's text encoder has zero input embeddings for the words its captions never used (section 2's norms of 0).
stand_in = resolve_stand_in(STAND_IN)  # "toy", "tiny" or None (the real model); NBHELPERS_STAND_IN is the default
mark = f" ({stand_in_mark(stand_in)})" if stand_in else ""  # on every picture and chart made from a stand-in
steps = STEPS or 400  # training steps of the real model; the stand-ins set their own
if stand_in == "toy":
    INSTANCE_PROMPT = "a red sks on a white background"
    CLASS_PROMPT = "a red triangle on a white background"
    NEW_PROMPTS = [
        "a red sks on a black background",
        "a blue sks on a gray background",
        "a yellow sks on a white background",
    ]
    USE_LORA, steps, LEARNING_RATE, NUM_CLASS_IMAGES = False, STEPS or 600, LEARNING_RATE or 2e-4, 6
elif stand_in == "tiny":
    steps, LEARNING_RATE = STEPS or 30, LEARNING_RATE or (1e-2 if USE_LORA else None)
    NUM_CLASS_IMAGES = min(NUM_CLASS_IMAGES, 2)
resolution = RESOLUTION or (64 if stand_in else 512)
daam_size = max(resolution, 128) if stand_in == "tiny" else resolution  # side of the pictures DAAM traces
on_cuda = torch.cuda.is_available()
run_dir = Path(OUTPUT_DIR) / (stand_in or "real")
print(f"stand-in: {stand_in}  LoRA={USE_LORA}  steps={steps}  resolution={resolution}  -> {run_dir}")

# %% [markdown]
# ## 1. The subject photos
#
# Good DreamBooth data is a few (3-5) sharp photos of the subject alone, from different angles and backgrounds. On Colab
# the next cell asks for yours (Cancel keeps the example dog); elsewhere set `INSTANCE_DIR` to a folder of photos.
# `load_images` applies each photo's EXIF orientation and refuses unreadable or too small files, naming the file.

# %%
try:  # Colab's upload widget; skipped elsewhere, for the stand-ins, and when INSTANCE_DIR names a folder
    from google.colab import files as colab_files
except ImportError:
    colab_files = None
if colab_files is not None and UPLOAD_PHOTOS and not stand_in and not INSTANCE_DIR:
    uploaded = colab_files.upload()  # {file name: bytes}; empty if you cancel
    if uploaded:
        INSTANCE_DIR = str(save_uploaded_photos(uploaded, run_dir / "my_photos"))
print("photos from:", INSTANCE_DIR or "the example subject")

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
# ## 2. The identifier, and the model before training
#
# The identifier should be a word the model has little prior for, so that training can give it the subject's
# meaning without fighting an old one. `sks` is not meaningless: it is one token of CLIP's vocabulary, with a
# learned embedding (it is also a rifle, which is why some people pick another rare token). The cell shows how the
# tokenizer splits the prompt and the length (L2 norm) of each token's input embedding.

# %%
inference_dtype = torch.float16 if on_cuda else torch.float32
pipe = load_pipeline(
    MODEL,
    stand_in=stand_in,
    dtype=inference_dtype,
    safety_checker=False,
    memory_savers="off",
    progress=False,
)
show_model_banner(pipe)
tokenizer = pipe.tokenizer
ids = tokenizer(INSTANCE_PROMPT, add_special_tokens=False).input_ids
norms = pipe.text_encoder.get_input_embeddings().weight.detach().float().norm(dim=1)
print(f"'{INSTANCE_PROMPT}' -> token ids {ids}; input embedding norm of each token{mark}:")
print({tokenizer.convert_ids_to_tokens(i): round(float(norms[i]), 3) for i in ids})

# %% [markdown]
# Before training, the model draws the instance prompt on fixed seeds without any idea of your subject, and the
# class prompt as it always has. A DAAM trace of the first seed records where the UNet's cross-attention looks for
# the identifier: DAAM sums the attention to one prompt word into a heat map (notebook 05 explains it). Section 9
# compares it with the same trace after training.

# %%
class_prompt = CLASS_PROMPT or " ".join(w for w in INSTANCE_PROMPT.split() if w != IDENTIFIER)


def draw(pipe, prompts, seeds):
    """One picture per (prompt, seed), in one batch; ``prompts`` is one prompt or one per seed."""
    prompts = [prompts] * len(seeds) if isinstance(prompts, str) else prompts
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    return pipe(prompts, height=resolution, width=resolution, generator=generators).images


def identifier_heat_map(pipe, seed):
    """The image of the instance prompt and the DAAM heat map of the identifier in it."""
    with torch.no_grad(), trace(pipe) as tc:
        image = pipe(INSTANCE_PROMPT, height=daam_size, width=daam_size, generator=set_seed(seed)).images[0]
        heat_map = tc.compute_global_heat_map().compute_word_heat_map(IDENTIFIER)
    return image, heat_map


before = draw(pipe, INSTANCE_PROMPT, SEEDS)
class_before = draw(pipe, class_prompt, SEEDS)
show_images(
    before + class_before,
    [f"'{INSTANCE_PROMPT}', seed {s}{mark}" for s in SEEDS] + [f"'{class_prompt}', seed {s}{mark}" for s in SEEDS],
    img_width=192,
)
daam_before = identifier_heat_map(pipe, SEEDS[0])

# %% [markdown]
# ## 3. The DreamBooth loss, by hand
#
# `DreamBoothConfig` checks every setting before anything loads, and creating the `DreamBoothTrainer` prints the
# **memory plan** (section 5). The loss is the diffusion loss on your photos: encode a photo to latents, add noise
# at a random timestep, let the UNet predict that noise from the noisy latents and the prompt, and take the mean
# squared error. With prior preservation each batch also holds generated class pictures, and their error, times
# `prior_loss_weight`, is added.

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
    class_prompt=class_prompt,
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

batch = next(iter(trainer.dataloader))  # the instance photo(s), then the class picture(s) with prior preservation
scheduler, device = trainer.noise_scheduler, trainer.accelerator.device
generator = torch.Generator().manual_seed(0)  # here on the CPU: the same draws on any machine
with torch.no_grad():
    pixels = batch["pixels"].to(device, trainer.vae.dtype)
    latents = trainer.vae.encode(pixels).latent_dist.sample(generator) * trainer.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype).to(device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator).to(device)
    # a_t = scheduler.alphas_cumprod[t], the share of the picture left at step t (notebook 01's a)
    noisy = scheduler.add_noise(latents, noise, timesteps)  # sqrt(a_t) * latents + sqrt(1 - a_t) * noise
    with trainer.autocast():  # fp16 on a GPU, as in training
        prediction = trainer.unet(noisy, timesteps, trainer.text_context(batch)).sample
    epsilon = scheduler.config.prediction_type == "epsilon"  # v-prediction models predict a velocity instead
    target = noise if epsilon else scheduler.get_velocity(latents, noise, timesteps)
    count = batch["num_instance"]
    instance_loss = F.mse_loss(prediction[:count].float(), target[:count].float())
    prior_loss = F.mse_loss(prediction[count:].float(), target[count:].float()) if len(latents) > count else 0.0
    loss = instance_loss + config.prior_loss_weight * prior_loss
    # inside no_grad: a loss kept with its graph would hold one UNet pass's activations (GiBs) for the whole notebook
    same = trainer.compute_loss(batch, noise=noise, timesteps=timesteps, generator=torch.Generator().manual_seed(0))
print(f"timesteps {timesteps.tolist()}: instance loss {instance_loss:.4f} + prior loss {float(prior_loss):.4f}")
print(f"by hand {loss:.6f}, trainer.compute_loss {same:.6f}{mark}")

# %% [markdown]
# ## 4. Training: a few steps by hand, then `trainer.train()`
#
# A training step is `loss = trainer.compute_loss(batch, generator=...)` then `trainer.optimizer_step(loss)`
# (backward, gradient clipping, the AdamW step, the learning-rate schedule). The three steps below are undone with
# `load_state_dict`, so that `trainer.train()`, the one-line alternative, runs the whole schedule: it adds the data
# order, the loss log, validation pictures and small checkpoints from which a stopped run resumes exactly.

# %%
start = trainer.state_dict()  # what a checkpoint holds: trained weights, optimizer, schedule, random generators
trainer.unet.train()
by_hand = []
for micro_step, batch in zip(range(3), trainer.dataloader, strict=False):
    loss = trainer.compute_loss(batch, generator=trainer.step_generator(micro_step))  # the step's own noise
    trainer.optimizer_step(loss)
    by_hand.append(round(loss.item(), 4))
trainer.load_state_dict(start)  # undo the three steps
del start  # a CPU copy of the optimizer state: gigabytes for a full fine-tune
print(f"three steps by hand: losses {by_hand}{mark}")

reset_peak_memory(device)  # for the measured peak beside the plan in section 5 (on a GPU)
result = trainer.train()
measured_peak = peak_memory_bytes(device)
print(f"step {result.global_step} (resumed from {result.resumed_from}); weights in {result.weights_dir}")
print("train() began with the same steps:", [round(loss, 4) for _, loss in result.losses[:3]])
checkpoints = sorted((output_dir / "checkpoints").glob("checkpoint-*"))
if checkpoints:
    files = sorted(checkpoints[-1].iterdir())
    size = sum(f.stat().st_size for f in files)
    print(f"{checkpoints[-1].name}: {size / 2**20:.2f} MiB, only what training changes: {[f.name for f in files]}")

# %% [markdown]
# ## 5. LoRA and the memory plan
#
# LoRA leaves each adapted weight `W` frozen and trains a low-rank change beside it: the layer computes
# `W x + (alpha/r)·B·A x`, with `A` of shape `r × in` and `B` of shape `out × r`, so each layer trains
# `r·(in + out)` numbers instead of `in·out`. The trainer adapts the attention projections `to_q`, `to_k`, `to_v`
# and `to_out.0` with `r = alpha = 4`; the next cell counts what that is on SD v1.4's UNet, built on PyTorch's
# `meta` device (shapes only: no download, no memory).

# %%
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

from nbhelpers.models.configs import CLIP_VIT_L_TEXT_CONFIG, SD_V1_UNET_CONFIG, SD_VAE_CONFIG  # noqa: E402

with torch.device("meta"):
    sd_unet = UNet2DConditionModel.from_config(SD_V1_UNET_CONFIG)
    sd_text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L_TEXT_CONFIG))
    sd_vae = AutoencoderKL.from_config(SD_VAE_CONFIG)
rank, targets = config.lora_rank, config.lora_target_modules
layers = lora_targets(sd_unet, targets)
for (fan_in, fan_out), count in sorted(Counter((la.in_features, la.out_features) for la in layers).items()):
    each = rank * (fan_in + fan_out)
    print(f"{count:3d} projections {fan_in:4d} -> {fan_out:4d}: {rank} x ({fan_in} + {fan_out}) = {each:,} each")
lora_total = sum(rank * (la.in_features + la.out_features) for la in layers)
unet_total = sum(p.numel() for p in sd_unet.parameters())
print(f"SD v1.4, rank {rank} on {targets}: {lora_total:,} parameters in {len(layers)} layers,")
print(f"{lora_total / unet_total:.2%} of the UNet's {unet_total:,} (a full fine-tune trains all of them)")
trained = sum(p.numel() for p in trainer.trainable_parameters())
print(f"this run trains {trained:,} parameters{mark}")

# %% [markdown]
# The memory plan adds up counted terms: the weights, fp32 gradients and AdamW's two fp32 moments of what is
# trained, and the activations autograd keeps for the backward pass (counted for this model, resolution and batch).
# Activations are freed as gradients appear, so the expected peak (the black mark) is weights + optimizer state + the
# larger of the two. The first three bars are SD v1.4 at 512 px with prior preservation on a free T4; on a GPU the
# red mark is this run's measured peak.

# %%
t4_budget = int(USABLE_SHARE * T4_USABLE_BYTES)  # a plan uses USABLE_SHARE of the free memory, here a T4's
cuda = torch.device("cuda")  # only named: with a budget given, nothing touches a GPU


def sd_plan(use_lora, eight_bit_available):
    settings = DreamBoothConfig("photos", "out", use_lora=use_lora, with_prior_preservation=True)
    models = (sd_unet, sd_text_encoder, sd_vae)
    return plan_memory(settings, *models, cuda, budget=t4_budget, eight_bit_available=eight_bit_available)


plans = {
    "SD v1.4 LoRA": sd_plan(use_lora=True, eight_bit_available=False),
    "SD v1.4 full, 8-bit Adam": sd_plan(use_lora=False, eight_bit_available=True),
    "SD v1.4 full, no bitsandbytes": sd_plan(use_lora=False, eight_bit_available=False),
}
terms = {  # the counted terms of each plan, bottom to top
    "weights": lambda e: e.weights,
    "optimizer state": lambda e: e.optimizer,
    "gradients": lambda e: e.gradients,
    "activations (+ autocast copies)": lambda e: e.activations + e.autocast_copies,
}


def memory_bars(ax, plans, unit, measured=None):
    """Stacked bars of the plans' terms, the expected peak of each (black) and a measured one (red)."""
    positions, bottom = np.arange(len(plans)), np.zeros(len(plans))
    for name, term in terms.items():
        values = np.array([term(plan.estimate) for plan in plans.values()]) / unit
        ax.bar(positions, values, 0.6, bottom=bottom, label=name)
        bottom += values
    peaks = [plan.estimate.peak / unit for plan in plans.values()]
    ax.scatter(positions, peaks, marker="_", s=900, color="black", label="expected peak")
    if measured:
        ax.scatter(positions[-1:], [measured / unit], marker="_", s=900, color="red", label="measured peak")
    savers = [
        "{}, checkpointing {}".format(p.mixed_precision, "on" if p.gradient_checkpointing else "off")
        for p in plans.values()
    ]
    ax.set_xticks(positions, [f"{name}\n{saver}" for name, saver in zip(plans, savers, strict=True)], fontsize=8)


this_run = trainer.plan
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[3, 1.3])
memory_bars(left, plans, GIB)
left.axhline(t4_budget / GIB, color="gray", linestyle=":", label="usable on a T4")
left.set_ylabel("GiB")
left.set_title("SD v1.4, 512 px, prior preservation: counted terms")
unit = GIB if this_run.estimate.peak > GIB else 2**20
memory_bars(right, {"this run": this_run}, unit, measured_peak)
right.set_ylabel("GiB" if unit == GIB else "MiB")
right.set_title("this run" + mark, fontsize=9)
left.legend(fontsize=8, loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. The loss curve, and the pictures after training
#
# The loss is the noise-prediction error at a random timestep, so single steps are noisy; the moving average shows
# the trend. Validation pictures rendered during training are in `validation/`.

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
# The LoRA folder holds `pytorch_lora_weights.safetensors` in the diffusers format (`pipe.load_lora_weights`), and
# `lora_kohya.safetensors` the same weights under kohya's names, for AUTOMATIC1111's `models/Lora/` or ComfyUI's
# `models/loras/`. The trained adapter is removed and the saved one loaded back, so the pictures come from the files
# (a full fine-tune is a pipeline folder for `load_pipeline`). Top row before training, bottom row after.

# %%
pipe.to(dtype=inference_dtype)  # the trained fp32 weights join the frozen ones for drawing
pipe.text_encoder.to(pipe.unet.device)  # cached embeddings kept it off the GPU during training
if USE_LORA:
    pipe.unet.delete_adapters("default")  # the adapter trained in place ...
    pipe.load_lora_weights(result.weights_dir)  # ... and the same one read back from disk
    print("loaded", sorted(p.name for p in result.weights_dir.iterdir()), "; A1111/ComfyUI file:", result.kohya_file)
after = draw(pipe, INSTANCE_PROMPT, SEEDS)
class_after = draw(pipe, class_prompt, SEEDS)
comparison = image_grid(before + after, rows=2, padding=4)
comparison.save(run_dir / "before_after.png")
plt.figure(figsize=(2.5 * len(SEEDS), 5.2))
plt.imshow(comparison)
plt.title(f"'{INSTANCE_PROMPT}': before (top) and after (bottom), seeds {SEEDS}" + ("\n" + mark.strip()) * bool(mark))
plt.axis("off")
plt.show()

# %% [markdown]
# ### Offline only: how much the toy's blob looks like a star
#
# *Skipped with the real model.* The toy's pictures can be scored: `shape_likeness` compares the drawn blob with a
# star's outline over the same box (intersection over union; the drawn shapes' own scores are printed for scale).
# The project's record, then this run's seeds.

# %%
if stand_in == "toy":
    from nbhelpers.notebook import toy_dreambooth_table, with_mark
    from nbhelpers.toy.evaluate import shape_likeness
    from nbhelpers.toy.shapes import SHAPES, Scene

    drawn_shapes = {
        shape: shape_likeness(Scene(shape=shape, colour="red", background="white").render(resolution)[0])
        for shape in [*SHAPES, "star"]
    }
    print("likeness to a star of a drawn", {shape: round(score, 2) for shape, score in drawn_shapes.items()})
    recorded = toy_dreambooth_table()  # benchmarks/results/toy_lessons.json; None without the repository
    if recorded is not None:
        how, rows = recorded
        print(with_mark("Recorded: " + how, stand_in_mark("toy")))
        display(pd.DataFrame(rows).set_index("seed"))
    likeness = {"before": [shape_likeness(i) for i in before], "after": [shape_likeness(i) for i in after]}
    print("this run:", {label: [round(v, 2) for v in values] for label, values in likeness.items()})
    ax = bar_chart(
        list(likeness),
        [float(np.mean(v)) for v in likeness.values()],
        title=f"Likeness to the star, '{INSTANCE_PROMPT}', {len(SEEDS)} seeds{mark}",
        ylabel="IoU with a star (mean over seeds)",
    )
    ax.set_xlabel("DreamBooth")
    ax.set_ylim(0, 1)
    plt.show()

# %% [markdown]
# ## 7. Language drift and prior preservation
#
# Fine-tuning on a few photos of one dog also changes what "dog" means: after training, "a photo of dog" tends to
# draw your dog, and its variety shrinks. This **language drift** comes from training the whole prompt's meaning,
# not only the identifier's, on a handful of pictures.

# %% [markdown]
# **Prior preservation** counters it: before training the base model draws `NUM_CLASS_IMAGES` pictures of the class
# prompt, and every step trains on one of them next to a subject photo (the prior loss of section 3), so the class
# keeps its old meaning. The cell trains once more with the other choice on a fresh base model and draws the class
# prompt on the same seeds. First it frees the first run's training state and moves its pipeline to CPU memory, so
# the second run gets the GPU memory the first had (a full fine-tune's optimizer state alone is gigabytes).

# %%
if COMPARE_PRIOR_PRESERVATION:
    del trainer  # the first run's optimizer state and gradients; `pipe` keeps its trained weights
    gc.collect()
    first_device = pipe.device
    pipe.to("cpu")  # back to first_device after the comparison
    if on_cuda:
        torch.cuda.empty_cache()
    other_pipe = load_pipeline(
        MODEL, stand_in=stand_in, dtype=inference_dtype, safety_checker=False, memory_savers="off", progress=False
    )
    other_config = dataclasses.replace(
        config,
        output_dir=str(output_dir) + ("-no-prior" if WITH_PRIOR_PRESERVATION else "-prior"),
        with_prior_preservation=not WITH_PRIOR_PRESERVATION,
        validation_prompts=[],
    )
    DreamBoothTrainer(other_config, pipe=other_pipe).train()
    gc.collect()  # the second trainer, whose optimizer state is no longer needed
    other_pipe.to(dtype=inference_dtype)
    other_pipe.text_encoder.to(other_pipe.unet.device)
    other_class, other_instance = draw(other_pipe, class_prompt, SEEDS), draw(other_pipe, INSTANCE_PROMPT, SEEDS)
    del other_pipe
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()
    pipe.to(first_device)
    with_prior = {"class": other_class, "instance": other_instance}
    without_prior = {"class": class_after, "instance": after}
    if WITH_PRIOR_PRESERVATION:
        with_prior, without_prior = without_prior, with_prior
    rows = {
        "before training": class_before,
        "after, without prior preservation": without_prior["class"],
        "after, with prior preservation": with_prior["class"],
        f"'{INSTANCE_PROMPT}', with prior preservation": with_prior["instance"],
    }
    grid = image_grid([image for row in rows.values() for image in row], rows=len(rows), padding=4)
    plt.figure(figsize=(2.5 * len(SEEDS), 2.4 * len(rows)))
    plt.imshow(grid)
    plt.yticks([(i + 0.5) * grid.height / len(rows) for i in range(len(rows))], list(rows), fontsize=8)
    plt.xticks([])
    plt.title(f"Rows 1-3: '{class_prompt}'; seeds {SEEDS}" + ("\n" + mark.strip()) * bool(mark))
    plt.show()

# %% [markdown]
# ### Offline only: does the toy keep its triangle?
#
# *Skipped with the real model.* The picture reader counts the class pictures that still show a red triangle on
# white. Full fine-tuning of a model this small can change what every prompt draws, so look for the paper's effect
# on the real model.

# %%
if stand_in == "toy" and COMPARE_PRIOR_PRESERVATION:
    from nbhelpers.toy.evaluate import read_scene

    for label, images in list(rows.items())[:3]:
        read = [read_scene(np.asarray(image, dtype=float)) for image in images]
        kept = sum((r.colour, r.shape, r.background) == ("red", "triangle", "white") for r in read)
        print(f"{label}: {kept} of {len(read)} read as a red triangle on white{mark}")

# %% [markdown]
# ## 8. New scenes
#
# The identifier now means the subject; the rest of the prompt still means what it meant to the base model.

# %%
scenes = draw(pipe, NEW_PROMPTS, SEEDS[:1] * len(NEW_PROMPTS))
show_images(scenes, [prompt + mark for prompt in NEW_PROMPTS], img_width=192)

# %% [markdown]
# ## 9. What the model learned: where it looks for the identifier
#
# DAAM (Tang et al., ACL 2023) adds up the UNet's cross-attention to one prompt word over the denoising steps and
# layers, giving a heat map of where that word acted on the picture. Before fine-tuning `sks` carries only its old,
# unrelated meaning, so its attention has nothing of the subject to follow; after, its map should follow the
# subject's shape.

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
