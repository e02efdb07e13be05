# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
# ---

# %% [markdown]
# # 06 · Many prompts: one process, several processes, a Ray cluster
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/your-org/diffusion-tutorials/blob/main/notebooks/06_many_prompts.ipynb)
#
# A prompts file becomes pictures plus a manifest, resumably, on one device or many. You will learn to:
#
# - write a prompts file (text, CSV or JSONL) with a seed and settings per row where you want them;
# - run it with `nbhelpers generate --prompts-file`: a progress bar, a `manifest.csv`, and a second run that skips
#   every finished row;
# - run the same file in several processes (`accelerate launch` on GPUs, `torchrun` on a CPU), each taking its
#   share with accelerate's `split_between_processes`, and with Ray Data actors, the tool for a cluster;
# - check that all three wrote the same bytes (every picture's name and seed come from its row, never from the
#   process that made it), and see how throughput changes with the number of workers, start-up included.
#
# The Azure ML batch endpoint of notebook 04 runs the same row function; `docs/scale.md` puts the three side by side.

# %%
# Set-up (Colab, Paperspace, a fresh runtime): installs nbhelpers, then what this notebook needs, and says so.
import importlib.util, os, subprocess, sys  # noqa: E401, I001

if importlib.util.find_spec("nbhelpers") is None:  # the project's code: the checkout this notebook is in, or git
    url = os.environ.get("NBHELPERS_REPO_URL", "https://github.com/your-org/diffusion-tutorials")
    source = ".." if os.path.isdir("../nbhelpers") else f"git+{url}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", source], check=True)
from nbhelpers.tutorials.setup import set_up  # noqa: E402

set_up("notebooks,scale")  # this notebook's extras: installs what is missing or too old, or says to restart

# %% [markdown]
# ## What to expect
#
# - **GPU**: recommended; with several, the second run uses one process per GPU. Without one, `STAND_IN = "toy"`
#   runs all three engines offline on the CPU's cores in a few minutes.
# - **Downloads**: DeciDiffusion in fp16, once (the table), and Ray Data if it is missing (the set-up cell installs
#   it; the `ray` 2.60 wheel for Linux x86-64 is 79 MB for Python 3.11 and 3.12).
# - **Time**: three runs of the prompts file (one process, `PROCESSES` processes, `RAY_ACTORS` Ray actors), each
#   loading the model in every worker, then about the table's seconds per picture (estimates: see the note under it).

# %%
from nbhelpers.notebook import show_what_to_expect

show_what_to_expect(["deci-v1"])

# %% tags=["parameters"]
# Papermill parameters
MODEL = "deci-v1"
STAND_IN = None  # None: the real model (unless NBHELPERS_STAND_IN says otherwise); "toy" or "tiny": offline
PROMPTS = [
    "A big owl with bright shinning eyes sitting on a tree branch",
    "A lighthouse on a cliff at sunset, oil painting",
    "A bowl of ramen on a wooden table, studio photo",
    "A red fox in fresh snow, wildlife photography",
    "An astronaut riding a horse on Mars",
    "A cosy reading nook with a cat, watercolour",
    "A futuristic city skyline at night, neon lights",
    "A sailing boat on a calm lake in the morning mist",
]
STEPS = None  # None: the model's default (30 for DeciDiffusion, 50 for SD)
PROCESSES = 2  # processes for the second run: one per GPU (on a CPU, processes on its cores)
RAY_ACTORS = 2  # Ray actors, one pipeline each
OUTPUT_DIR = "outputs/06_many_prompts"

# %%
import hashlib
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from nbhelpers.images import show_images
from nbhelpers.stand_in import resolve_stand_in, stand_in_mark

# %%
# Offline stand-in: the one place this notebook changes for it. The toy model draws one coloured shape; its own
# captions and a few steps keep three runs of the file within a minute or two on a CPU.
stand_in = resolve_stand_in(STAND_IN)  # "toy", "tiny" or None (the real model); NBHELPERS_STAND_IN is the default
if stand_in is not None:
    PROMPTS = [
        "a red circle on a white background",
        "a blue square on a gray background",
        "a yellow triangle on a black background",
        "a green circle on a gray background",
        "a red square on a white background",
        "a blue triangle on a white background",
    ]
    STEPS = 6
mark = f" ({stand_in_mark(stand_in)})" if stand_in else ""

# %% [markdown]
# ## 1. A prompts file
#
# One row per picture. A CSV or JSONL file may give a row its own `seed` and settings (`steps`, `guidance`,
# `height`, `width`, `negative_prompt`); an empty cell takes the command's default. Rows without a seed use
# `--seed` plus the row number, so every row's picture can be made again alone. A bad file (no `prompt` column,
# a misspelt column, a setting out of range, an empty prompt, not UTF-8) is refused before any work, with its line.

# %%
output = Path(OUTPUT_DIR)
shutil.rmtree(output, ignore_errors=True)  # each run of the notebook measures from scratch
output.mkdir(parents=True)
prompts_file = output / "prompts.csv"
seeds = [""] * len(PROMPTS)  # empty: the command's --seed plus the row number
seeds[1] = "1234"  # this row keeps its own seed wherever it sits in the file
rows = pd.DataFrame({"prompt": PROMPTS, "seed": seeds})
rows.to_csv(prompts_file, index=False)
rows

# %% [markdown]
# ## 2. One process: `nbhelpers generate --prompts-file`
#
# Every finished row goes to a journal (`progress.jsonl`) at once, so a stopped run (Ctrl-C, a preempted runtime)
# continues where it stopped when you run the same command again. A picture is named after its row and a hash of
# what made it (prompt, seed, settings, model), so an edited row is made again. The notebook runs the terminal
# commands below as subprocesses and times them, start-up and model loading included.

# %%
gpus = torch.cuda.device_count()
environment = dict(os.environ)
if not gpus:  # one torch thread per process: a fair comparison on a CPU, and the same numbers in every process
    environment["OMP_NUM_THREADS"] = "1"
generate = ["-m", "nbhelpers", "generate", "--prompts-file", str(prompts_file), "--model", MODEL]
generate += ["--stand-in", stand_in or "none"] + (["--steps", str(STEPS)] if STEPS else [])


def timed(command, folder):
    """Run `command` writing into `folder`; return the wall-clock seconds, start-up and loading included."""
    start = time.perf_counter()
    done = subprocess.run([*command, "--out", str(folder)], env=environment, capture_output=True, text=True)
    if done.returncode:
        print(done.stderr[-3000:])
    done.check_returncode()
    print(done.stdout.strip())  # the command's summary: made, already done, failed
    return time.perf_counter() - start


seconds = {"one process": timed([sys.executable, *generate, "--quiet"], output / "one")}
manifest = pd.read_csv(output / "one" / "manifest.csv")
manifest

# %%
show_images(
    [Image.open(output / "one" / name) for name in manifest["image"]],
    [f"seed {seed}: {prompt}{mark}" for seed, prompt in zip(manifest["seed"], manifest["prompt"], strict=True)],
    img_width=160,
)

# %% [markdown]
# Run it again: every row is already done, so nothing is generated (only the start-up is paid).

# %%
print(f"{timed([sys.executable, *generate, '--quiet'], output / 'one'):.1f} s")

# %% [markdown]
# ## 3. Several processes: `accelerate launch` (GPUs) or `torchrun` (a CPU)
#
# Under `accelerate launch --num_processes N -m nbhelpers generate ...` each process reads the journal, takes its
# share of the unfinished rows (`PartialState().split_between_processes`, as in diffusers' "Distributed inference"
# guide), loads the model on its own GPU and journals into its own file; the main process writes the manifest when
# all are done. On a machine without GPUs, `accelerate launch --cpu --num_processes N` starts only *one* process
# (its multi-CPU mode goes through MPI), so the CPU run here uses `torchrun --nproc_per_node N`, which starts N;
# accelerate's `PartialState` inside `nbhelpers` is the same either way.

# %%
if gpus:
    processes = min(PROCESSES, gpus)  # one process per GPU
    # `accelerate launch`, run with this kernel's Python (the `accelerate` script may not be on the PATH)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    launcher += ["--multi_gpu"] if processes > 1 else []
    command = [*launcher, *generate]
else:
    processes = PROCESSES
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command += [*generate, "--device", "cpu"]
print(" ".join(command))
launched_by = "accelerate launch" if gpus else "torchrun"
label = f"{processes} processes ({launched_by})" if processes > 1 else f"1 process ({launched_by})"
seconds[label] = timed([*command, "--quiet"], output / "processes")

# %% [markdown]
# ## 4. A Ray cluster: Ray Data actors
#
# `nbhelpers.jobs.ray_engine.run_with_ray` follows Ray's "Stable Diffusion Batch Prediction with Ray Data" example:
# the unfinished rows become a Ray Dataset, `map_batches` hands them to `RAY_ACTORS` actors that each load the
# pipeline once (`num_gpus=1` each on a GPU cluster), and each actor writes pictures and journal lines into the
# output folder, which on a real cluster is a file system every node mounts. Here Ray starts a local "cluster" on
# this machine. It needs Ray Data (`pip install 'ray[data]>=2.60'`, what the set-up cell installs).

# %%
try:
    import ray
except ImportError:
    from nbhelpers.tutorials.setup import requirements

    ray = None
    needed = [str(r).split(";")[0] for r in requirements("scale") if r.name == "ray"]  # the scale extra's Ray
    print(f"Ray is not installed: pip install '{needed[0]}' to run this part.")
if ray is not None:
    from nbhelpers.jobs import JobSpec, PipelineRecipe, read_rows
    from nbhelpers.jobs.ray_engine import run_with_ray
    from nbhelpers.jobs.rows import normalise_settings

    actors = RAY_ACTORS
    start = time.perf_counter()
    # A local Ray "cluster" (CPU actors get one CPU each, and Ray gives them one torch thread, as the processes had)
    ray.init(num_cpus=None if gpus else actors, include_dashboard=False, log_to_driver=False)
    recipe = PipelineRecipe.make(MODEL, stand_in=stand_in or "none")
    job = JobSpec(out=output / "ray", identity=recipe.identity(), settings=normalise_settings({"steps": STEPS}), seed=0)
    report = run_with_ray(
        read_rows(prompts_file),
        job,
        recipe,
        concurrency=actors,
        num_gpus=min(1.0, gpus / actors) if gpus else 0,  # several actors may share a GPU that holds their pipelines
    )
    seconds[f"{actors} Ray actors"] = time.perf_counter() - start
    ray.shutdown()
    print(report)

# %% [markdown]
# ## 5. The same bytes, and how throughput scales
#
# Every file of every run, hashed: the pictures and the manifest should be identical whichever engine made them, on
# one kind of device with the same number of torch threads per worker (CPU kernels split sums over threads
# differently, so a picture made with 4 threads can differ by a level in a few pixels). The project's tests have
# checked this on a CPU only; the first line below says whether your run kept it.

# %%
folders = {"one process": output / "one", label: output / "processes"}
if ray is not None:
    folders[f"{RAY_ACTORS} Ray actors"] = output / "ray"


def fingerprints(folder):
    """sha256 (first 16 hex digits) of every picture and the manifest; the journal's order varies, so it is left out."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".csv") and p.name != "prompts.csv")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in files}


hashes = pd.DataFrame({name: fingerprints(folder) for name, folder in folders.items()})
print("identical in every run:", all(hashes[c].equals(hashes["one process"]) for c in hashes.columns))
hashes


# %% [markdown]
# Wall-clock time includes starting Python, loading the model in every worker and (for Ray) starting the cluster;
# "generating" is the busiest worker's time inside the pipeline, from the journal. With a few small pictures the
# start-up dominates. With hundreds of real ones we expect N GPUs to approach N times one GPU's throughput, an
# expectation not yet measured here.


# %%
def busiest_worker_seconds(folder):
    """The largest sum of pipeline seconds over the workers that made the pictures (from the journal)."""
    records = [json.loads(line) for line in (folder / "progress.jsonl").read_text().splitlines()]
    return pd.DataFrame(records).groupby("worker")["seconds"].sum().max()


device = f"{gpus} x {torch.cuda.get_device_name(0)}" if gpus else f"CPU ({os.cpu_count()} cores), 1 thread per worker"
throughput = pd.DataFrame(
    {
        "wall-clock s": {name: round(seconds[name], 1) for name in folders},
        "generating s": {name: round(busiest_worker_seconds(folder), 1) for name, folder in folders.items()},
    }
)
throughput["pictures per minute (wall clock)"] = (60 * len(PROMPTS) / throughput["wall-clock s"]).round(1)
throughput["pictures per minute (generating)"] = (60 * len(PROMPTS) / throughput["generating s"]).round(1)
print(f"Measured on {device}; {len(PROMPTS)} pictures of {MODEL}{mark}.")
throughput

# %% [markdown]
# ## 6. The batch endpoint, and where to go from here
#
# - **One machine, several GPUs**: `accelerate launch --num_processes N -m nbhelpers generate --prompts-file FILE
#   --out DIR`.
# - **A cluster**: start Ray on it (`ray start --head`, or a managed Ray service), connect (`ray.init()`), and call
#   `run_with_ray(rows, job, recipe, concurrency=N, num_gpus=1)` with the output folder on storage every node sees.
# - **Azure ML batch endpoint** (notebook 04): `batch_score.py` calls the same row function on each CSV file Azure
#   hands it; `instance_count` and `max_concurrency_per_instance` decide how many workers run at once.
#
# `docs/scale.md` compares them and says what each costs to set up.
