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
# - how to generate a first image to prove everything works.
#
# Nothing here needs a GPU; with one, the later notebooks are much faster.

# %%
# Set-up: installs what this notebook needs (Colab, Paperspace, a clone or a local Jupyter) and says what it did.
# Generated from pyproject.toml by `python -m nbhelpers.tutorials.bootstrap`: the same in every notebook but for EXTRAS.
EXTRAS = "notebooks"
NEEDS = {
    "": [
        "torch>=2.1",
        "diffusers>=0.35",
        "transformers>=4.44",
        "accelerate>=0.33",
        "safetensors>=0.4",
        "huggingface-hub>=0.24",
        "numpy>=1.24",
        "scipy>=1.10",
        "pillow>=10",
        "matplotlib>=3.7",
        "tqdm>=4.66",
    ],
    "azure": ["azure-ai-ml>=1.20", "azure-identity>=1.15", "azure-ai-contentsafety>=1.0", "pyyaml>=6"],
    "notebooks": ["ipyplot>=1.1.2", "ipython-autotime>=0.3.2", "ipywidgets>=8", "papermill>=2.5", "pandas>=2.0"],
    "serving": ["azureml-inference-server-http>=1.3", "gunicorn>=22", "requests>=2.31", "urllib3>=2.2", "pandas>=2.0"],
    "training": ["peft>=0.12"],
}
MODULES = {
    "pillow": "PIL",
    "huggingface-hub": "huggingface_hub",
    "ipython-autotime": "autotime",
    "azure-ai-ml": "azure.ai.ml",
    "azure-identity": "azure.identity",
    "azure-ai-contentsafety": "azure.ai.contentsafety",
    "pyyaml": "yaml",
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
    root = next(
        (p for p in [here, *here.parents] if (p / "pyproject.toml").is_file() and (p / "nbhelpers").is_dir()), None
    )
    problems = missing()
    if problems:
        print("Missing or too old:", ", ".join(problems))
        if root is None:
            root = here / repo_url.rstrip("/").split("/")[-1].removesuffix(".git")
            if not (root / "pyproject.toml").is_file():
                print(f"Not inside a checkout of the project: cloning {repo_url} into {root}")
                subprocess.run(["git", "clone", "--depth", "1", repo_url, str(root)], check=True)
        before = {(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}
        print(f'Installing: pip install -e "{root}[{extras}]" (a few minutes on a fresh runtime)')
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f"{root}[{extras}]"], check=True)
        sys.path.insert(0, str(root))  # pip's editable install is seen by new processes; this kernel needs the path
        importlib.invalidate_caches()
        after = {(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}
        changed = [
            n for n, v in before.items() if after.get(n) != v and MODULES.get(n, n.replace("-", "_")) in sys.modules
        ]
        problems = missing()
        if problems or changed:
            raise RuntimeError(
                f"Restart the kernel (Colab: Runtime > Restart session), then run this cell again: "
                f"still missing {problems}, upgraded after import {changed}."
            )
    print(f"Ready: nbhelpers and the [{extras}] extras import", f"(checkout {root})" if root else "(installed)")


set_up(EXTRAS)

# %% [markdown]
# The cell above is the same set-up cell every notebook starts with. It checks, by importing them in a separate
# Python process, that `nbhelpers` and the libraries this notebook needs are there at a recent enough version. If
# not, it finds the checkout the notebook runs in (or, on a fresh Colab runtime, clones the repository: the URL
# comes from `pyproject.toml`, or from the `NBHELPERS_REPO_URL` environment variable), runs
# `pip install -e "<checkout>[notebooks]"` (other notebooks add `training`, `serving`, `azure`) and prints what it
# did. Run it again at any time: when everything is installed it does nothing.
#
# ## What to expect
#
# - **GPU**: not needed for this notebook. The check below says what your machine has and what to do without a
#   GPU (Colab: *Runtime → Change runtime type → T4 GPU*).
# - **Downloads**: the smoke test at the end downloads DeciDiffusion once (about 2.7 GB in fp16, see the table;
#   sizes are computed from the published configs). In tiny mode it downloads nothing.
# - **Time**: about 5 minutes on a fresh Colab T4 (installing and downloading); the T4 times in the table are
#   estimates computed from FLOPs and a published A10 timing, not measurements.
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
TINY = None  # None: follow NBHELPERS_TINY; True: offline tiny model with random weights

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
# defaults its authors publish: DeciDiffusion runs 30 DDIM steps with guidance rescale 0.7, SD v1.x 50 PNDM steps.

# %%
from nbhelpers.catalog import catalog_table

pd.DataFrame(catalog_table()).set_index("name")

# %% [markdown]
# ## 4. Smoke test: one image
#
# With hub access this downloads the model the first time (about 2.7 GB for DeciDiffusion, whose files are
# fp16). In tiny mode (`TINY = True` or `NBHELPERS_TINY=1`) it builds a small offline stand-in with random
# weights instead: it checks the code path, and its picture is noise.

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
# Everything works if you see an image above (in tiny mode: noise, marked as such).
#
# **Next:** [`01_text_to_image.ipynb`](01_text_to_image.ipynb): DeciDiffusion and Stable Diffusion, seeds,
# guidance, schedulers and negative prompts.
