# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
# ---

# %% [markdown]
# # 04 · Online and batch endpoints: the Azure ML text-to-image contract
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/your-org/diffusion-tutorials/blob/main/notebooks/04_endpoints.ipynb)
#
# Deployed text-to-image models on Azure ML speak one JSON contract. You will learn to:
#
# - serve that contract on your own machine with Microsoft's own server (`azmlinfsrv`, what managed online
#   endpoints run) behind a gateway that answers like a managed endpoint: 401 without the key, 429 when too many
#   requests are in flight, 408 when a request runs past its timeout;
# - send the contract's sample request, look at the raw JSON and the images, meet the 429 and 408 you will meet in
#   production, and see how a client that retries with backoff handles them;
# - run a batch job over a folder of CSV files, resumably, and read `predictions.csv`;
# - build the Azure deployment objects and, with a workspace, deploy and invoke real endpoints.

# %%
# Set-up (Colab, Paperspace, a fresh runtime): installs nbhelpers, then what this notebook needs, and says so.
import importlib.util, os, subprocess, sys  # noqa: E401, I001

if importlib.util.find_spec("nbhelpers") is None:  # the project's code: the checkout this notebook is in, or git
    url = os.environ.get("NBHELPERS_REPO_URL", "https://github.com/your-org/diffusion-tutorials")
    source = ".." if os.path.isdir("../nbhelpers") else f"git+{url}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", source], check=True)
from nbhelpers.tutorials.setup import set_up  # noqa: E402

set_up("notebooks,serving,azure")  # this notebook's extras: installs what is missing or too old, or says to restart

# %% tags=["parameters"]
# Papermill parameters
MODEL = "deci-v1"
STAND_IN = None  # None: the real model (unless NBHELPERS_STAND_IN says otherwise); "toy" or "tiny": offline
PORT = 5031
API_KEY = "local-dev-key"
PROMPTS = ["a photograph of an astronaut riding a horse", "lion holding hunted deer in grass fields"]
CLIENT_PROMPT = "A big owl with bright shinning eyes"
BATCH_FILES = {
    "prompts-1.csv": ["a red fox in the snow", "a lighthouse at dusk", "a bowl of ramen"],
    "prompts-2.csv": ["a watercolor of a cat", "a castle on a hill"],
}
STEPS = None  # None: the model's default (20 for the toy stand-in, 4 for the tiny one)
REQUEST_TIMEOUT_MS = None  # None: 90000 ms (the samples' value); Azure's default 5000 ms for a stand-in
OUTPUT_DIR = "outputs/04_endpoints"
# Azure (optional): leave empty to skip the deployment cells
AZURE_SUBSCRIPTION_ID = ""
AZURE_RESOURCE_GROUP = ""
AZURE_WORKSPACE = ""
ONLINE_ENDPOINT_NAME = "deci-t2i"
BATCH_ENDPOINT_NAME = "deci-t2i-batch"
BATCH_COMPUTE = "gpu-cluster"

# %%
import concurrent.futures
import json
import logging
import time
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import requests

from nbhelpers.endpoints.batch_runner import run_batch
from nbhelpers.endpoints.client import EndpointClient, EndpointError
from nbhelpers.endpoints.contract import decode_image
from nbhelpers.endpoints.serving import local_server
from nbhelpers.images import show_images
from nbhelpers.stand_in import resolve_stand_in, stand_in_mark

# %%
# Offline stand-in: the one place this notebook changes for it. The toy model draws one coloured shape from prompts
# like these, and nothing else; small models make short requests, so Azure's default timeout is enough.
stand_in = resolve_stand_in(STAND_IN)  # "toy", "tiny" or None (the real model); NBHELPERS_STAND_IN is the default
mark = f" ({stand_in_mark(stand_in)})" if stand_in else ""  # every picture of a stand-in says so
if stand_in == "toy":
    PROMPTS = ["a red circle on a white background", "a green triangle on a gray background"]
    CLIENT_PROMPT = "a blue square on a black background"
    BATCH_FILES = {
        "prompts-1.csv": [
            "a red circle on a black background",
            "a yellow square on a gray background",
            "a blue triangle on a white background",
        ],
        "prompts-2.csv": ["a green circle on a white background", "a red triangle on a black background"],
    }
steps = STEPS or {"toy": 20, "tiny": 4}.get(stand_in)  # None: the model's default
request_timeout_ms = REQUEST_TIMEOUT_MS or (5000 if stand_in else 90_000)

# %%
output = Path(OUTPUT_DIR)
output.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. Start the local server
#
# `local_server` runs `nbhelpers serve` in a subprocess (in a terminal: `NBHELPERS_API_KEY=... nbhelpers serve
# --model deci-v1 --port 5031`; the key is read from the environment or `--api_key_file`, never from the command
# line, where `ps` shows it). Inside, Microsoft's `azmlinfsrv` app runs `nbhelpers/endpoints/scoring/online_score.py`
# behind a gateway on 127.0.0.1 that plays the part of Azure's: it checks the key and the body size from the headers,
# lets at most `2 x max_concurrent_requests_per_instance` requests in flight (the rest get **429**), and answers
# **408** when a request runs past `request_timeout_ms` (and stops its generation).
#
# The server is a context manager: in a script, `with local_server(...) as url:`. A notebook spreads the work over
# cells, so an `ExitStack` keeps it open until the cell that closes the stack; the server and its worker stop then
# (or when the kernel dies). While the model loads, the start-up steps are printed.

# %%
servers = ExitStack()
url = servers.enter_context(
    local_server(
        MODEL,
        port=PORT,
        stand_in=stand_in,
        api_key=API_KEY,
        max_concurrent_requests_per_instance=1,
        request_timeout_ms=request_timeout_ms,
        log_file=output / "server.log",
        progress=True,
    )
)
print("live:", requests.get(url + "/", timeout=10).text, "at", url)

# %% [markdown]
# ## 2. The contract's sample request

# %%
sample = {
    "input_data": {
        "columns": ["prompt"],
        "data": PROMPTS,
        "index": [0, 1],
        "parameters": {"guidance_scale": 7.5, **({"num_inference_steps": steps} if steps else {})},
    }
}
auth = {"Authorization": f"Bearer {API_KEY}"}
response = requests.post(url + "/score", json=sample, headers=auth, timeout=600)
print("HTTP", response.status_code)
rows = response.json()
print(json.dumps([{**r, "generated_image": r["generated_image"][:40] + "..."} for r in rows], indent=2))
show_images([decode_image(r["generated_image"]) for r in rows], [r["prompt"] + mark for r in rows], img_width=256)

# %% [markdown]
# Bad requests get a 4xx JSON error naming the field and the allowed range, and a missing key gets 401:

# %%
for body, headers in [
    ({"input_data": {"data": ["an owl"], "parameters": {"num_inference_steps": 5000}}}, auth),
    ({"input_data": {"data": []}}, auth),
    (sample, {}),
]:
    r = requests.post(url + "/score", json=body, headers=headers, timeout=60)
    print(r.status_code, r.json()["error"])

# %% [markdown]
# ## 3. Busy and slow: the 429 and 408 you will meet in production
#
# A managed online endpoint scores `max_concurrent_requests_per_instance` requests at once per instance (1 here,
# as on a GPU), queues as many again, and answers **429 Too Many Requests** with `Retry-After` to the rest.
# Six requests sent at once:

# %%
busy = {"input_data": {"data": ["an owl"], "parameters": {"num_inference_steps": 12 if stand_in else 50}}}


def post(_):
    r = requests.post(url + "/score", json=busy, headers=auth, timeout=600)
    return r.status_code, r.headers.get("Retry-After")


with concurrent.futures.ThreadPoolExecutor(6) as pool:
    for status, retry_after in pool.map(post, range(6)):
        print(status, f"Retry-After: {retry_after} s" if retry_after else "")

# %% [markdown]
# Azure asks clients to back off and try again. `EndpointClient` does it with urllib3's `Retry` (waits of 0, 2, 4,
# 8... x `backoff_s`, or what `Retry-After` says), for 408, 429, 502, 503 and 504 and failed connections; it never
# retries an input error (400, 401, 413, 422, 424). The same six requests through it all succeed; urllib3's log
# shows the retries.

# %%
logging.basicConfig(format="%(message)s")
logging.getLogger("urllib3.util.retry").setLevel(logging.DEBUG)
client = EndpointClient(url + "/score", key=API_KEY, retries=8, backoff_s=0.5)
start = time.perf_counter()
with concurrent.futures.ThreadPoolExecutor(6) as pool:
    results = list(pool.map(lambda _: client.score(busy), range(6)))
logging.getLogger("urllib3.util.retry").setLevel(logging.WARNING)
print(f"{len(results)} of 6 answered with images in {time.perf_counter() - start:.1f} s")

# %% [markdown]
# A request still running after `request_timeout_ms` (Azure's default is 5000 ms; text-to-image deployments
# raise it; here the `REQUEST_TIMEOUT_MS` parameter sets it) gets **408**. On Azure the container keeps working
# on it; this server stops the generation at the next denoising step (diffusers' `callback_on_step_end`), so the
# slot is free at once. A client that retries a 408 only helps if the next try is faster; it says why it gave up:

# %%
heavy = {
    "input_data": {
        "data": ["a castle", "a forest", "a lake", "a city"],
        "parameters": {"num_inference_steps": 150, "height": 512, "width": 512},
    }
}
print(f"request_timeout_ms = {request_timeout_ms}")
start = time.perf_counter()
r = requests.post(url + "/score", json=heavy, headers=auth, timeout=600)
print(r.status_code, f"after {time.perf_counter() - start:.1f} s:", r.json().get("error", {}).get("message"))
try:
    EndpointClient(url + "/score", key=API_KEY, retries=1, backoff_s=0.5).score(heavy)
except EndpointError as err:
    print("client:", err)
start = time.perf_counter()
small = client.generate(["a small request right after"], **({"num_inference_steps": steps} if steps else {}))
print(f"the next request was served in {time.perf_counter() - start:.1f} s: the stopped generation freed its slot")

# %% [markdown]
# ## 4. The client
#
# `EndpointClient` works the same against Azure (`https://<endpoint>.<region>.inference.ml.azure.com/score` and the
# endpoint key) and this server.

# %%
extra = {"num_inference_steps": steps} if steps else {}
generated = client.generate([CLIENT_PROMPT], **extra)
show_images([g.image for g in generated], [f"{g.prompt} (nsfw: {g.nsfw_content_detected}){mark}" for g in generated])
servers.close()  # stops the gateway and the scoring worker
print("server stopped")

# %% [markdown]
# ## 5. Batch scoring over CSV files
#
# A batch endpoint takes a folder of CSV files with a `prompt` column. `run_batch` runs the same row logic as the
# batch scoring script (`nbhelpers/endpoints/scoring/batch_score.py`) locally, through the same row function
# (same seeds, same images). It journals every finished row under a key made of its file, row, prompt and settings,
# so an interrupted run continues where it stopped and an edited row is made again; failed rows are recorded with
# their error.

# %%
inputs = output / "batch_in"
inputs.mkdir(exist_ok=True)
for name, rows in BATCH_FILES.items():
    pd.DataFrame({"prompt": rows}).to_csv(inputs / name, index=False)
report = run_batch(
    inputs,
    output / "batch_out",
    model=MODEL,
    stand_in=stand_in,
    parameters={"num_inference_steps": steps} if steps else None,
)
print(report)
predictions = pd.read_csv(report.predictions)
predictions

# %%
from PIL import Image

show_images(
    [Image.open(output / "batch_out" / name) for name in predictions["image"]],
    [prompt + mark for prompt in predictions["prompt"]],
    img_width=160,
)

# %% [markdown]
# ## 6. Deploy to Azure ML (needs a workspace)
#
# `nbhelpers.endpoints.azure_deploy` builds the managed online endpoint and deployment, the batch endpoint and
# deployment and the environment. Building them needs no credentials; the cell below prints the online
# deployment as the YAML dict `az ml online-deployment create --file` would take. Its `request_settings`
# (`request_timeout_ms`, `max_concurrent_requests_per_instance`) come from the same `EndpointSettings` that
# configured the local server above, so production enforces the limits you rehearsed. Deploying and invoking run
# only when the Azure parameters are set (and `azure-identity` can log in).

# %%
from nbhelpers.endpoints.azure_deploy import (
    as_yaml_dict,
    batch_deployment,
    batch_endpoint,
    online_deployment,
    online_endpoint,
)
from nbhelpers.endpoints.settings import EndpointSettings

endpoint = online_endpoint(ONLINE_ENDPOINT_NAME)
deployment = online_deployment(
    ONLINE_ENDPOINT_NAME,
    instance_type="Standard_NC6s_v3",
    settings=EndpointSettings(model=MODEL, request_timeout_ms=90_000),
)
print(json.dumps(as_yaml_dict(deployment), indent=2, default=str)[:1500])

# %%
if not (AZURE_SUBSCRIPTION_ID and AZURE_RESOURCE_GROUP and AZURE_WORKSPACE):
    print(
        "Skipped: set AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZURE_WORKSPACE to deploy "
        "(this needs an Azure subscription with GPU quota; nothing is created otherwise)."
    )
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
    show_images([g.image for g in online_images], [g.prompt for g in online_images])  # real weights on Azure

    ml.batch_endpoints.begin_create_or_update(batch_endpoint(BATCH_ENDPOINT_NAME)).result()
    ml.batch_deployments.begin_create_or_update(
        batch_deployment(BATCH_ENDPOINT_NAME, model="azureml:deci-pipeline:1", compute=BATCH_COMPUTE)
    ).result()
    job = ml.batch_endpoints.invoke(
        endpoint_name=BATCH_ENDPOINT_NAME, inputs={"data": Input(type="uri_folder", path=str(inputs))}
    )
    print("batch job:", job.name)
