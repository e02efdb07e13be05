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
#   watching a progress bar and the loss curve; checkpoints let a stopped run resume;
# - compare images before and after training on the same seeds;
# - save the LoRA, load it into a fresh pipeline with `pipe.load_lora_weights(folder)`, and draw new scenes.
#
# The same trainer runs from the command line, on one GPU or several:
# `accelerate launch -m nbhelpers dreambooth --instance-dir photos/ --output-dir runs/dog`.
#
# With hub access this notebook uses the public `diffusers/dog-example` photos and SD v1.4 (a GPU with 8 GB or
# more: LoRA at 512 px with fp16 mixed precision). Offline it uses a synthetic subject the project draws and the
# tiny random-weight model: the code path is the real one, the pictures are not results.

# %%
# Set-up: installs what this notebook needs (Colab, Paperspace, a clone or a local Jupyter) and says what it did.
# Generated from pyproject.toml by `python -m nbhelpers.bootstrap`: the same in every notebook but for EXTRAS.
EXTRAS = "notebooks,training"
NEEDS = {
    "": ["torch>=2.1", "diffusers>=0.35", "transformers>=4.44", "accelerate>=0.33", "safetensors>=0.4",
        "huggingface-hub>=0.24", "numpy>=1.24", "scipy>=1.10", "pillow>=10", "matplotlib>=3.7", "tqdm>=4.66"],
    "azure": ["azure-ai-ml>=1.20", "azure-identity>=1.15", "azure-ai-contentsafety>=1.0", "pyyaml>=6"],
    "notebooks": ["ipyplot>=1.1.2", "ipython-autotime>=0.3.2", "ipywidgets>=8", "papermill>=2.5", "pandas>=2.0"],
    "serving": ["azureml-inference-server-http>=1.3", "gunicorn>=22", "requests>=2.31", "urllib3>=2.2",
        "pandas>=2.0"],
    "training": ["peft>=0.12"],
}
MODULES = {
    "pillow": "PIL",
    "huggingface-hub": "huggingface_hub",
    "ipython-autotime": "autotime",
    "azure-ai-ml": "azure.ai.ml",
    "azure-identity": "azure.identity",
    "azure-ai-contentsafety": "azure.ai.contentsafety",
}


def set_up(extras):
    import importlib
    import os
    import re
    import subprocess
    import sys
    from importlib import metadata
    from pathlib import Path

    def number(version):
        return tuple(int(x) for x in re.findall(r"\d+", version)[:3])

    def missing():  # import what the notebook needs; never import a version that pip must replace
        problems = []
        for requirement in [r for extra in ["", *extras.split(",")] for r in NEEDS[extra]]:
            dist, _, low = requirement.partition(">=")
            try:
                found = metadata.version(dist)
                if low and number(found) < number(low):
                    problems.append(f"{dist} {found} (needs >={low})")
                    continue
                importlib.import_module(MODULES.get(dist, dist.replace("-", "_")))
            except (ImportError, metadata.PackageNotFoundError) as err:
                problems.append(f"{dist} ({type(err).__name__})")
        try:
            importlib.import_module("nbhelpers")
        except ImportError:
            problems.append("nbhelpers")
        return problems

    repo_url = os.environ.get("NBHELPERS_REPO_URL") or "https://github.com/your-org/diffusion-tutorials"
    here = Path.cwd().resolve()
    root = next((p for p in [here, *here.parents] if (p / "pyproject.toml").is_file() and (p / "nbhelpers").is_dir()),
                None)
    problems = missing()
    if problems:
        print("Missing or too old:", ", ".join(problems))
        if root is None:
            root = here / repo_url.rstrip("/").split("/")[-1].removesuffix(".git")
            if not (root / "pyproject.toml").is_file():
                print(f"Not inside a checkout of the project: cloning {repo_url} into {root}")
                subprocess.run(["git", "clone", "--depth", "1", repo_url, str(root)], check=True)
        before = {(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}
        print(f"Installing: pip install -e \"{root}[{extras}]\" (a few minutes on a fresh runtime)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f"{root}[{extras}]"], check=True)
        sys.path.insert(0, str(root))  # pip's editable install is seen by new processes; this kernel needs the path
        importlib.invalidate_caches()
        after = {(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}
        changed = [n for n, v in before.items()
                   if after.get(n) != v and MODULES.get(n, n.replace("-", "_")) in sys.modules]
        problems = missing()
        if problems or changed:
            raise RuntimeError(f"Restart the kernel (Colab: Runtime > Restart session), then run this cell again: "
                               f"still missing {problems}, upgraded after import {changed}.")
    print(f"Ready: nbhelpers and the [{extras}] extras import", f"(checkout {root})" if root else "(installed)")


set_up(EXTRAS)

# %% tags=["parameters"]
# Papermill parameters
MODEL = "sd-v1-4"  # base model: catalog name, hub id or local folder
TINY = None  # None: follow NBHELPERS_TINY; True: offline tiny model with random weights and a synthetic subject
INSTANCE_DIR = None  # your photos; None: the hub's dog photos (or the synthetic subject when tiny)
INSTANCE_PROMPT = "a photo of sks dog"
USE_LORA = True  # False: fine-tune the whole UNet (needs ~15 GB with GRADIENT_CHECKPOINTING and USE_8BIT_ADAM)
WITH_PRIOR_PRESERVATION = False  # also train on generated "a photo of dog" images, keeping the class prior
NUM_CLASS_IMAGES = 50
STEPS = None  # None: 400 for the real model, 30 for the tiny one
RESOLUTION = None  # None: 512 for the real model, 64 for the tiny one
LEARNING_RATE = None  # None: 1e-4 for LoRA, 5e-6 for full fine-tuning (tiny LoRA: 1e-2, to see it learn)
MIXED_PRECISION = None  # None: "fp16" on CUDA, "no" elsewhere
GRADIENT_CHECKPOINTING = False
USE_8BIT_ADAM = False  # needs bitsandbytes and CUDA
SEEDS = [0, 1, 2]
NEW_PROMPTS = ["a photo of sks dog in a bucket", "a photo of sks dog on the beach", "a watercolor of sks dog"]
OUTPUT_DIR = "outputs/03_dreambooth"

# %%
import gc
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from nbhelpers.dreambooth import DreamBoothTrainer
from nbhelpers.dreambooth.config import DreamBoothConfig
from nbhelpers.dreambooth.data import example_subject, load_images
from nbhelpers.images import image_grid, show_images
from nbhelpers.loading import load_pipeline
from nbhelpers.models.tiny import tiny_requested
from nbhelpers.notebook import show_model_banner

tiny = tiny_requested(TINY)
steps = STEPS or (30 if tiny else 400)
resolution = RESOLUTION or (64 if tiny else 512)
learning_rate = LEARNING_RATE or (1e-2 if tiny and USE_LORA else None)
mixed_precision = MIXED_PRECISION or ("fp16" if torch.cuda.is_available() else "no")
run_dir = Path(OUTPUT_DIR) / ("tiny" if tiny else "real")
print(f"tiny={tiny}  steps={steps}  resolution={resolution}  mixed_precision={mixed_precision}  -> {run_dir}")

# %% [markdown]
# ## 1. The subject photos
#
# Good DreamBooth data is 3-10 sharp photos of the subject alone, from different angles and backgrounds.
# `load_images` applies each photo's EXIF orientation and refuses unreadable files and photos too small for the
# training resolution, naming the file.

# %%
instance_dir = Path(INSTANCE_DIR) if INSTANCE_DIR else example_subject(run_dir / "instance_images", tiny=tiny)
photos = load_images(instance_dir, min_side=resolution // 2)
print(f"{len(photos)} photos in {instance_dir}")
show_images(photos, [f"{i}: {p.width}x{p.height}" for i, p in enumerate(photos)], img_width=160)

# %% [markdown]
# ## 2. Before training
#
# The base model, loaded in fp32 for training (the trainer keeps frozen weights in fp16 under mixed precision),
# draws the instance prompt on fixed seeds. It has no idea what `sks` is.

# %%
pipe = load_pipeline(MODEL, tiny=TINY, dtype=torch.float32, safety_checker=False, memory_savers="off",
                     progress=False)
show_model_banner(pipe)


def draw(pipe, prompt, seeds):
    return [pipe(prompt, height=resolution, width=resolution, generator=torch.Generator("cpu").manual_seed(seed)
                 ).images[0] for seed in seeds]


before = draw(pipe, INSTANCE_PROMPT, SEEDS)
show_images(before, [f"before, seed {s}" for s in SEEDS], img_width=192)

# %% [markdown]
# ## 3. Train
#
# `DreamBoothConfig` holds every setting and checks it before anything loads; `DreamBoothTrainer` runs the
# loop through `accelerate`. Every `checkpointing_steps` a checkpoint is written (to a temporary folder, then
# renamed), so re-running this cell after an interruption continues from the last checkpoint instead of
# starting again. The loss of every step lands in `train_log.csv`.

# %%
output_dir = run_dir / ("dreambooth-lora" if USE_LORA else "dreambooth-full")
config = DreamBoothConfig(
    instance_data_dir=str(instance_dir), output_dir=str(output_dir), model=MODEL,
    tiny=tiny, instance_prompt=INSTANCE_PROMPT, with_prior_preservation=WITH_PRIOR_PRESERVATION,
    num_class_images=NUM_CLASS_IMAGES, class_data_dir=str(run_dir / "class_images"), resolution=resolution,
    use_lora=USE_LORA, learning_rate=learning_rate, max_train_steps=steps, mixed_precision=mixed_precision,
    gradient_checkpointing=GRADIENT_CHECKPOINTING, use_8bit_adam=USE_8BIT_ADAM,
    checkpointing_steps=max(1, steps // 4), validation_prompts=[NEW_PROMPTS[0]], validation_steps=max(1, steps // 2),
)
trainer = DreamBoothTrainer(config, pipe=pipe)
trained = sum(p.numel() for p in trainer.trainable_parameters())
total = sum(p.numel() for p in trainer.unet.parameters())
print(f"training {trained:,} of the UNet's {total:,} parameters ({100 * trained / total:.2f}%)")
result = trainer.train()
print(f"step {result.global_step} (resumed from {result.resumed_from}); weights in {result.weights_dir}")

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
ax.plot(steps_logged[window - 1:], smooth, label=f"moving average ({window} steps)")
ax.set_xlabel("step")
ax.set_ylabel("MSE loss")
ax.set_title("DreamBooth training loss" + (" (tiny random-weight model)" if tiny else ""))
ax.legend()
plt.show()
validation = sorted((output_dir / "validation").glob("*.png"))
if validation:
    show_images([plt.imread(p) for p in validation], [p.name for p in validation], img_width=160)

# %% [markdown]
# ## 5. Save, reload into a fresh pipeline, compare on the same seeds
#
# The LoRA folder holds `pytorch_lora_weights.safetensors` in the diffusers format: any SD v1.x pipeline loads
# it with `pipe.load_lora_weights(folder)`. A full fine-tune is a whole pipeline folder that `load_pipeline`
# loads. The top row is before training, the bottom row after, seed by seed.

# %%
del trainer, pipe
gc.collect()
if torch.cuda.is_available():
    torch.cuda.empty_cache()

if USE_LORA:
    tuned = load_pipeline(MODEL, tiny=TINY, progress=False)
    tuned.load_lora_weights(result.weights_dir)
else:
    tuned = load_pipeline(result.weights_dir, progress=False)
print("loaded", sorted(p.name for p in result.weights_dir.iterdir()))
after = draw(tuned, INSTANCE_PROMPT, SEEDS)
comparison = image_grid(before + after, rows=2, padding=4)
comparison.save(run_dir / "before_after.png")
plt.figure(figsize=(2.5 * len(SEEDS), 5.2))
plt.imshow(comparison)
plt.title(f"'{INSTANCE_PROMPT}': before (top) and after (bottom), seeds {SEEDS}"
          + ("\n(tiny random-weight model: noise, not results)" if tiny else ""))
plt.axis("off")
plt.show()

# %% [markdown]
# ## 6. New scenes
#
# The identifier now means the subject; the rest of the prompt still means what it meant to the base model.

# %%
scenes = [draw(tuned, prompt, SEEDS[:1])[0] for prompt in NEW_PROMPTS]
show_images(scenes, NEW_PROMPTS, img_width=192)
