# %% [markdown]
# # 00 · Install and check your environment
#
# Run this first, on Colab, Paperspace or your own machine. You will learn:
#
# - how to install the tutorials' helper library `nbhelpers` (from this checkout, or from a clone on Colab);
# - how to log in to the Hugging Face hub (optional: the models used here are public);
# - what your machine offers: GPU, memory, CUDA, library versions, and which models the tutorials use;
# - how to generate a first image to prove everything works.
#
# Nothing here needs a GPU; with one, the later notebooks are much faster.

# %% tags=["parameters"]
# Papermill parameters
REINSTALL = False  # force a reinstall even if nbhelpers is already importable
PROJECT_SOURCE = None  # outside a checkout: a pip requirement for the project, e.g. "git+https://...<your clone>"
HF_TOKEN = None  # optional Hugging Face token; public models need none
MODEL = "deci-v1"  # model for the smoke test
TINY = None  # None: follow NBHELPERS_TINY; True: offline tiny model with random weights

# %% [markdown]
# ## 1. Install
#
# Inside a clone of this repository the cell installs it in editable mode with the notebook extras
# (`pip install -e ".[notebooks]"`). On Colab or Paperspace, clone the repository first
# (`!git clone <repository URL>` then `%cd <folder>`), or set `PROJECT_SOURCE` to a pip requirement.
# If `nbhelpers` is already importable nothing is installed.

# %%
import importlib.util
import subprocess
import sys
from pathlib import Path

checkout = next(
    (p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").is_file() and (p / "nbhelpers").is_dir()),
    None,
)
if importlib.util.find_spec("nbhelpers") is not None and not REINSTALL:
    print("nbhelpers is already installed: nothing to do.")
elif checkout is not None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", f"{checkout}[notebooks]"])
    print(f"Installed nbhelpers from {checkout}. Restart the kernel if this was a reinstall.")
elif PROJECT_SOURCE:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", PROJECT_SOURCE])
else:
    raise RuntimeError(
        "nbhelpers is not installed and this notebook is not inside a checkout of the project. "
        "Clone the repository and open the notebook from its notebooks/ folder, or set PROJECT_SOURCE."
    )

# %% [markdown]
# ## 2. Hugging Face hub login (optional)
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
# ## 3. What this machine offers
#
# The report lists the platform (Colab, Paperspace, Kaggle or local), the GPU and its memory, CUDA and the
# versions of the libraries the tutorials depend on. Include it when you report a problem.

# %%
import pandas as pd

from nbhelpers.environment import environment_report

report = environment_report()
pd.DataFrame(report.rows(), columns=["item", "value"]).set_index("item")

# %%
if report.device == "cpu":
    print("No GPU found: the notebooks run, but real models take minutes per image on a CPU.")
elif report.gpu_memory_gib is not None and report.gpu_memory_gib < 8:
    print(f"{report.gpu_memory_gib:.1f} GiB GPU: nbhelpers turns on attention/VAE slicing (and CPU offload "
          "below 5 GiB) automatically.")
else:
    print(f"GPU ready: {report.gpu_name} with {report.gpu_memory_gib} GiB.")

# %% [markdown]
# ## 4. The models the tutorials use
#
# `load_pipeline(name)` takes any of these short names (or a hub id, or a local folder). Each entry carries the
# defaults its authors publish: DeciDiffusion runs 30 DDIM steps with guidance rescale 0.7, SD v1.x 50 PNDM steps.

# %%
from nbhelpers.catalog import catalog_table

pd.DataFrame(catalog_table()).set_index("name")

# %% [markdown]
# ## 5. Smoke test: one image
#
# With hub access this downloads the model (about 2 GB for DeciDiffusion in fp16) the first time. In tiny mode
# (`TINY = True` or `NBHELPERS_TINY=1`) it builds a small offline stand-in with random weights instead: it
# checks the code path, and its picture is noise.

# %%
from nbhelpers.generation import generate
from nbhelpers.images import show_images
from nbhelpers.loading import load_pipeline
from nbhelpers.notebook import show_model_banner

pipe = load_pipeline(MODEL, tiny=TINY)
show_model_banner(pipe)
result = generate(pipe, "A photo of an astronaut riding a horse on Mars", seed=0)
print(f"Generated in {result.seconds:.1f} s: {result.diagnosis()[0]}")
show_images(result.images, result.labels(), img_width=256)

# %% [markdown]
# Everything works if you see an image above. Next: `01_text_to_image.ipynb`.
