# %% [markdown]
# # 04 · Online and batch endpoints: the Azure ML text-to-image contract
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/your-org/diffusion-tutorials/blob/main/notebooks/04_endpoints.ipynb)
#
# Deployed text-to-image models on Azure ML speak one JSON contract. You will learn to:
#
# - serve that contract on your own machine with Microsoft's own server (`azmlinfsrv`, what managed online
#   endpoints run), with an API key and graceful 503s when busy;
# - send the contract's sample request, look at the raw JSON and the images, and call the endpoint with a client
#   that retries on 429/503;
# - run a batch job over a folder of CSV files, resumably, and read `predictions.csv`;
# - build the Azure deployment objects and, with a workspace, deploy and invoke real endpoints.

# %%
# Set-up: installs what this notebook needs (Colab, Paperspace, a clone or a local Jupyter) and says what it did.
# Generated from pyproject.toml by `python -m nbhelpers.bootstrap`: the same in every notebook but for EXTRAS.
EXTRAS = "notebooks,serving,azure"
NEEDS = {
    "": ["torch>=2.1", "diffusers>=0.35", "transformers>=4.44", "accelerate>=0.33", "safetensors>=0.4",
        "huggingface-hub>=0.24", "numpy>=1.24", "scipy>=1.10", "pillow>=10", "matplotlib>=3.7", "tqdm>=4.66"],
    "azure": ["azure-ai-ml>=1.20", "azure-identity>=1.15", "azure-ai-contentsafety>=1.0"],
    "notebooks": ["ipyplot>=1.1.2", "ipython-autotime>=0.3.2", "ipywidgets>=8", "papermill>=2.5", "pandas>=2.0"],
    "serving": ["azureml-inference-server-http>=1.3", "requests>=2.31", "pandas>=2.0"],
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
MODEL = "deci-v1"
TINY = None  # None: follow NBHELPERS_TINY; True: offline tiny model with random weights
PORT = 5031
API_KEY = "local-dev-key"
STEPS = None  # None: the model's default; small values make the demo fast on a CPU
OUTPUT_DIR = "outputs/04_endpoints"
# Azure (optional): leave empty to skip the deployment cells
AZURE_SUBSCRIPTION_ID = ""
AZURE_RESOURCE_GROUP = ""
AZURE_WORKSPACE = ""
ONLINE_ENDPOINT_NAME = "deci-t2i"
BATCH_ENDPOINT_NAME = "deci-t2i-batch"
BATCH_COMPUTE = "gpu-cluster"

# %%
import json
from pathlib import Path

import pandas as pd
import requests

from nbhelpers.endpoints.batch_runner import run_batch
from nbhelpers.endpoints.client import EndpointClient
from nbhelpers.endpoints.contract import decode_image
from nbhelpers.endpoints.serving import local_server
from nbhelpers.images import show_images
from nbhelpers.models.tiny import tiny_requested

tiny = tiny_requested(TINY)
steps = STEPS or (4 if tiny else None)
output = Path(OUTPUT_DIR)
output.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. Start the local server
#
# `local_server` runs `azmlinfsrv --entry_script nbhelpers/scoring/online_score.py` in a subprocess (the same as
# `nbhelpers serve --model deci-v1 --port 5031 --api-key ...` in a terminal) and waits until `GET /` answers.
# One worker holds the model; extra concurrent requests get `503` with `Retry-After` instead of piling up.

# %%
server = local_server(MODEL, port=PORT, tiny=tiny, api_key=API_KEY, log_file=output / "server.log")
url = server.start()
print("live:", requests.get(url + "/", timeout=10).text, "at", url)

# %% [markdown]
# ## 2. The contract's sample request

# %%
sample = {
    "input_data": {
        "columns": ["prompt"],
        "data": ["a photograph of an astronaut riding a horse", "lion holding hunted deer in grass fields"],
        "index": [0, 1],
        "parameters": {"guidance_scale": 7.5, **({"num_inference_steps": steps} if steps else {})},
    }
}
response = requests.post(url + "/score", json=sample, headers={"Authorization": f"Bearer {API_KEY}"},
                         timeout=600)
print("HTTP", response.status_code)
rows = response.json()
print(json.dumps([{**r, "generated_image": r["generated_image"][:40] + "..."} for r in rows], indent=2))
show_images([decode_image(r["generated_image"]) for r in rows], [r["prompt"] for r in rows], img_width=256)

# %% [markdown]
# Bad requests get a 4xx JSON error naming the field and the allowed range, and a missing key gets 401:

# %%
client_headers = {"Authorization": f"Bearer {API_KEY}"}
for body, headers in [
    ({"input_data": {"data": ["an owl"], "parameters": {"num_inference_steps": 5000}}}, client_headers),
    ({"input_data": {"data": []}}, client_headers),
    (sample, {}),
]:
    r = requests.post(url + "/score", json=body, headers=headers, timeout=60)
    print(r.status_code, r.json()["error"])

# %% [markdown]
# ## 3. The client
#
# `EndpointClient` works the same against Azure (`https://<endpoint>.<region>.inference.ml.azure.com/score` and the
# endpoint key) and this server; it retries 429/503 with backoff, honouring `Retry-After`.

# %%
client = EndpointClient(url + "/score", key=API_KEY)
extra = {"num_inference_steps": steps} if steps else {}
generated = client.generate(["A big owl with bright shinning eyes"], **extra)
show_images([g.image for g in generated], [f"{g.prompt} (nsfw: {g.nsfw_content_detected})" for g in generated])
server.stop()
print("server stopped")

# %% [markdown]
# ## 4. Batch scoring over CSV files
#
# A batch endpoint takes a folder of CSV files with a `prompt` column. `run_batch` runs the same row logic as the
# batch scoring script (`nbhelpers/scoring/batch_score.py`) locally. It journals every finished row, so an
# interrupted run continues where it stopped; failed rows are recorded with their error.

# %%
inputs = output / "batch_in"
inputs.mkdir(exist_ok=True)
pd.DataFrame({"prompt": ["a red fox in the snow", "a lighthouse at dusk", "a bowl of ramen"]}).to_csv(
    inputs / "prompts-1.csv", index=False)
pd.DataFrame({"prompt": ["a watercolor of a cat", "a castle on a hill"]}).to_csv(
    inputs / "prompts-2.csv", index=False)
report = run_batch(inputs, output / "batch_out", model=MODEL, tiny=tiny,
                   parameters={"num_inference_steps": steps} if steps else None)
print(report)
predictions = pd.read_csv(report.predictions)
predictions

# %%
from PIL import Image

show_images([Image.open(output / "batch_out" / name) for name in predictions["image"]], list(predictions["prompt"]),
            img_width=160)

# %% [markdown]
# ## 5. Deploy to Azure ML (needs a workspace)
#
# `nbhelpers.endpoints.azure_deploy` builds the managed online endpoint and deployment, the batch endpoint and
# deployment and the environment. Building them needs no credentials; the cell below prints the online
# deployment as the YAML dict `az ml online-deployment create --file` would take. Deploying and invoking run
# only when the Azure parameters are set (and `azure-identity` can log in).

# %%
from nbhelpers.endpoints.azure_deploy import (
    as_yaml_dict,
    batch_deployment,
    batch_endpoint,
    online_deployment,
    online_endpoint,
)

endpoint = online_endpoint(ONLINE_ENDPOINT_NAME)
deployment = online_deployment(ONLINE_ENDPOINT_NAME, model_name=MODEL, instance_type="Standard_NC6s_v3")
print(json.dumps(as_yaml_dict(deployment), indent=2, default=str)[:1500])

# %%
if not (AZURE_SUBSCRIPTION_ID and AZURE_RESOURCE_GROUP and AZURE_WORKSPACE):
    print("Skipped: set AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZURE_WORKSPACE to deploy "
          "(this needs an Azure subscription with GPU quota; nothing is created otherwise).")
else:
    from azure.ai.ml import Input, MLClient
    from azure.identity import DefaultAzureCredential

    ml = MLClient(DefaultAzureCredential(), AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZURE_WORKSPACE)
    ml.online_endpoints.begin_create_or_update(endpoint).result()
    ml.online_deployments.begin_create_or_update(deployment).result()
    endpoint.traffic = {deployment.name: 100}
    ml.online_endpoints.begin_create_or_update(endpoint).result()
    scoring_uri = ml.online_endpoints.get(ONLINE_ENDPOINT_NAME).scoring_uri
    key = ml.online_endpoints.get_keys(ONLINE_ENDPOINT_NAME).primary_key
    online_images = EndpointClient(scoring_uri, key=key).generate(sample["input_data"]["data"])
    show_images([g.image for g in online_images], [g.prompt for g in online_images])

    ml.batch_endpoints.begin_create_or_update(batch_endpoint(BATCH_ENDPOINT_NAME)).result()
    ml.batch_deployments.begin_create_or_update(
        batch_deployment(BATCH_ENDPOINT_NAME, model="azureml:deci-pipeline:1", compute=BATCH_COMPUTE)).result()
    job = ml.batch_endpoints.invoke(endpoint_name=BATCH_ENDPOINT_NAME,
                                    inputs={"data": Input(type="uri_folder", path=str(inputs))})
    print("batch job:", job.name)
