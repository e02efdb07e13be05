# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
# ---

# %% [markdown]
# # 00 · Install and check your environment
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/your-org/diffusion-tutorials/blob/main/notebooks/00_install_and_environment.ipynb)
#
# Run this first, on Colab, Paperspace or your own machine. You will learn:
#
# - how every notebook installs what it needs (its first cell: from this checkout, or from a clone on Colab);
# - how to log in to the Hugging Face hub (optional: the models used here are public);
# - what your machine offers: GPU, memory, CUDA, library versions, and which models the tutorials use;
# - what the parts of a text-to-image pipeline do, in one picture;
# - how to generate a first image to prove everything works.
#
# Nothing here needs a GPU; with one, the later notebooks are much faster.

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
# Every notebook starts with the cell above: it installs the project's code if it is missing, then `set_up` installs
# whatever this notebook's libraries (its *extras*) lack and says what it did. Run again, it installs nothing.
#
# ## What to expect
#
# - **GPU**: not needed for this notebook. The check below says what your machine has and what to do without a
#   GPU (Colab: *Runtime → Change runtime type → T4 GPU*).
# - **Downloads**: the smoke test at the end downloads DeciDiffusion once (its size is in the table, computed from
#   the published configs). With a stand-in (`STAND_IN`) it downloads nothing.
# - **Time**: mostly installing and downloading, a few minutes on a fresh Colab runtime (not measured: the table's
#   download time assumes 50 MB/s); the T4 times in the table are estimates scaled from a published SD v1.5 T4
#   timing (the note under the table), not measurements.
# - **Model cards**: [DeciDiffusion 1.0](https://huggingface.co/Deci/DeciDiffusion-v1-0),
#   [SD v1.5](https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5),
#   [SD v1.4](https://huggingface.co/CompVis/stable-diffusion-v1-4),
#   [small-stable-diffusion](https://huggingface.co/OFA-Sys/small-stable-diffusion-v0).

# %%
from nbhelpers.notebook import show_what_to_expect

show_what_to_expect(["deci-v1"])

# %% tags=["parameters"]
# Papermill parameters
HF_TOKEN = None  # optional Hugging Face token; public models need none
MODEL = "deci-v1"  # model for the smoke test
STAND_IN = None  # None: the real model (unless NBHELPERS_STAND_IN says otherwise); "toy" or "tiny": offline
PROMPT = "A photo of an astronaut riding a horse on Mars"

# %% [markdown]
# ## 1. Hugging Face hub login (optional)
#
# The tutorials' models are public, so downloads work without logging in. A token raises rate limits and is
# needed for gated or private models. Never paste a token into a notebook you share: use an environment
# variable (`HF_TOKEN`) or Colab's secrets instead.

# %%
import os

token = HF_TOKEN or os.environ.get("HF_TOKEN")
if token:
    from huggingface_hub import login

    login(token=token)
    print("Logged in to the Hugging Face hub.")
else:
    print("No token given: public models only (that is all these tutorials need).")

# %% [markdown]
# ## 2. What this machine offers
#
# The report lists the platform (Colab, Paperspace, Kaggle or local), the GPU and its memory, CUDA and the
# versions of the libraries the tutorials depend on. Include it when you report a problem.

# %%
import pandas as pd

from nbhelpers.environment import environment_report

report = environment_report()
pd.DataFrame(report.rows(), columns=["item", "value"]).set_index("item")

# %%
from nbhelpers.notebook import gpu_advice

print(gpu_advice())

# %% [markdown]
# ## 3. The models the tutorials use
#
# `load_pipeline(name)` takes any of these short names (or a hub id, or a local folder). Each entry carries the
# defaults its authors publish: DeciDiffusion runs 30 DDIM steps with guidance rescale 0.7, SD v1.x 50 PNDM steps
# (DDIM and PNDM are two samplers, the step rules notebook 01 compares).

# %%
from nbhelpers.catalog import catalog_table

pd.DataFrame(catalog_table()).set_index("name")

# %% [markdown]
# ## 4. What happens when you generate an image
#
# A text-to-image pipeline is a few models handing their results on. The tokenizer and the text encoder turn the
# prompt into 77 vectors of numbers; starting from random noise in a small *latent* (4 x 64 x 64 numbers for a
# 512 px picture), the UNet predicts at every step what to take away and the scheduler takes that step; after the
# last step the VAE's decoder turns the latent into the picture. Notebook 01 opens each part and writes this loop
# by hand.

# %%
import matplotlib.pyplot as plt

from nbhelpers.notebook import pipeline_diagram

pipeline_diagram()
plt.show()

# %% [markdown]
# The three models in the diagram:
#
# - **CLIP text encoder**: the text half of CLIP, a model OpenAI trained to match pictures with their captions; it
#   turns the 77 token ids into 77 vectors that say what the prompt describes.
# - **UNet**: a network shaped like a U (it shrinks the latent step by step to 8 x 8 and grows it back, with
#   shortcuts between equal sizes) that reads a noisy latent, the step number and the text vectors and predicts
#   what to take away.
# - **VAE** (variational autoencoder): an encoder that squeezes a picture into a latent 8 times smaller on each side
#   and a decoder that turns a latent back into a picture; the steps run on the latent because it holds far fewer
#   numbers (4 x 64 x 64 instead of 3 x 512 x 512).

# %% [markdown]
# ## 5. Smoke test: one image
#
# With hub access this downloads the model the first time (the size in the table at the top) and makes one picture.
# Offline, a **stand-in** takes the model's place through the same code path (the next cell); its pictures are
# marked as such.

# %%
# Offline stand-in: the one place this notebook changes for it. STAND_IN = "toy" is a small model this project
# trained on 64 px pictures of one coloured circle, square or triangle: it often, not always, draws prompts like
# "a red circle on a white background" and nothing else, so it gets such a prompt. "tiny" is the real layout with
# random weights: noise, only for trying the code. Every picture made from either is marked.
from nbhelpers.stand_in import resolve_stand_in

stand_in = resolve_stand_in(STAND_IN)  # "toy", "tiny" or None (the real model); NBHELPERS_STAND_IN is the default
if stand_in == "toy":
    PROMPT = "a red circle on a white background"

# %%
from nbhelpers.generation import generate
from nbhelpers.images import show_images
from nbhelpers.loading import load_pipeline
from nbhelpers.notebook import show_model_banner

pipe = load_pipeline(MODEL, stand_in=stand_in)
show_model_banner(pipe)
result = generate(pipe, PROMPT, seed=0)
print(f"Generated in {result.seconds:.1f} s: {result.diagnosis()[0]}")
show_images(result.images, result.labels(), img_width=256)

# %% [markdown]
# Everything works if you see an image above (with the tiny stand-in: noise, marked as such).
#
# **Next:** [`01_text_to_image.ipynb`](01_text_to_image.ipynb): DeciDiffusion and Stable Diffusion from the
# inside (the parts above, the denoising loop by hand), seeds, guidance, samplers, zero terminal SNR, negative
# prompts and image-to-image.
