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
# - see what runs where (client, gateway, inference server, scoring script, pipeline) and read the scoring script;
# - serve that contract on your own machine with Microsoft's own server (`azmlinfsrv`, what managed online
#   endpoints run) behind a gateway that answers like a managed endpoint: 401 without the key, 429 when too many
#   requests are in flight, 408 when a request runs past its timeout;
# - send the contract's sample request, look at the raw JSON and the images, meet the 429 and 408 you will meet in
#   production, and see on a timeline how a client that retries with backoff handles them;
# - run a batch job over a folder of CSV files, resumably, and read `predictions.csv`;
# - screen prompts and images with Azure AI Content Safety (offline: a stand-in that shows a blocked prompt);
# - build the Azure deployment objects (model asset, environment, endpoints) and, with a workspace, deploy, invoke
#   and delete real endpoints (they bill while they exist).

# %%
# Set-up (Colab, Paperspace, a fresh runtime): installs nbhelpers, then what this notebook needs, and says so.
import importlib.util, os, subprocess, sys  # noqa: E401, I001

if importlib.util.find_spec("nbhelpers") is None:  # the project's code: the checkout this notebook is in, or git
    url = os.environ.get("NBHELPERS_REPO_URL", "https://github.com/your-org/diffusion-tutorials")
    source = ".." if os.path.isdir("../nbhelpers") else f"git+{url}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", source], check=True)
from nbhelpers.tutorials.setup import set_up  # noqa: E402

set_up("notebooks,serving,azure")  # this notebook's extras: installs what is missing or too old, or says to restart

# %% [markdown]
# ## What to expect
#
# - **GPU**: recommended (a free Colab T4 is enough); without one, `STAND_IN = "toy"` runs everything offline in
#   minutes.
# - **Downloads**: DeciDiffusion in fp16 (the table), loaded by the local servers and the batch run.
# - **Time**: about 20 pictures at the table's seconds per image (estimates, not measurements: the note under the
#   table says how they are made), plus starting the local server twice.
# - **Azure bills**: sections 8-9 run only with your workspace set. An online endpoint bills for its instances from
#   creation until section 9 deletes it, serving or not; a batch job bills its cluster's nodes while it runs.

# %%
from nbhelpers.notebook import show_what_to_expect

show_what_to_expect(["deci-v1"])

# %% tags=["parameters"]
# Papermill parameters
MODEL = "deci-v1"
STAND_IN = None  # None: the real model (unless NBHELPERS_STAND_IN says otherwise); "toy" or "tiny": offline
PORT = 5031
API_KEY = "local-dev-key"
PROMPTS = ["a photograph of an astronaut riding a horse", "lion holding hunted deer in grass fields"]
CLIENT_PROMPT = "A big owl with bright shinning eyes"  # the original tutorial's prompt, misspelling included
BATCH_FILES = {
    "prompts-1.csv": ["a red fox in the snow", "a lighthouse at dusk", "a bowl of ramen"],
    "prompts-2.csv": ["a watercolor of a cat", "a castle on a hill"],
}
STEPS = None  # None: the model's default (20 for the toy stand-in, 4 for the tiny one)
REQUEST_TIMEOUT_MS = None  # None: 90000 ms (the samples' value); Azure's default 5000 ms for a stand-in
SHORT_TIMEOUT_MS = None  # section 4's second server, for its 408: None: 2000 ms (1000 ms for a stand-in)
OUTPUT_DIR = "outputs/04_endpoints"
# Azure (optional): leave empty to skip the deployment cells
AZURE_SUBSCRIPTION_ID = ""
AZURE_RESOURCE_GROUP = ""
AZURE_WORKSPACE = ""
ONLINE_ENDPOINT_NAME = "deci-t2i"
BATCH_ENDPOINT_NAME = "deci-t2i-batch"
BATCH_COMPUTE = "gpu-cluster"  # an AML compute cluster; made (T4 nodes, 0 when idle) if the workspace has none
NBHELPERS_REF = "main"  # pushed branch, tag or commit of your repository the Azure image installs nbhelpers from
DELETE_COMPUTE = False  # the clean-up deletes the endpoints; the compute cluster too only when True

# %%
import concurrent.futures
import json
import logging
import time
from contextlib import ExitStack
from importlib.resources import files
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import requests
from matplotlib.patches import FancyBboxPatch, Patch

from nbhelpers.endpoints.batch_runner import run_batch
from nbhelpers.endpoints.client import Attempt, EndpointClient, EndpointError, RequestTiming
from nbhelpers.endpoints.content_safety import ContentSafetyScreen, WordListSafetyClient
from nbhelpers.endpoints.contract import decode_image
from nbhelpers.endpoints.serving import local_server
from nbhelpers.images import show_images
from nbhelpers.stand_in import resolve_stand_in, stand_in_mark

# %%
# Offline stand-in: the one place this notebook changes for it. The toy model draws one coloured shape from prompts
# like these, and nothing else; small models make short requests, so Azure's default timeout is enough, and the busy
# requests of section 4 take more steps than the model's few so that six of them overlap. Its 408 needs no large
# pictures: 150 steps at the stand-in's own size outlast a short timeout on a CPU, in steps short enough to stop at
# once (a large picture's steps take many seconds there).
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
busy_steps = 12 if stand_in else None  # None: the model's default
request_timeout_ms = REQUEST_TIMEOUT_MS or (5000 if stand_in else 90_000)
short_timeout_ms = SHORT_TIMEOUT_MS or (1000 if stand_in else 2000)
long_size, short_size = ({}, {}) if stand_in else ({"height": 768, "width": 768}, {"height": 256, "width": 256})
# Without an Azure AI Content Safety resource (CONTENT_SAFETY_ENDPOINT and CONTENT_SAFETY_KEY unset), section 7
# screens with this word list in place of the service's classifiers, whatever the model.
SAFETY_STAND_IN_WORDS = {"bleeding": ("Violence", 4), "severed": ("Violence", 4)}

# %%
output = Path(OUTPUT_DIR)
output.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. What runs where
#
# A request goes from the client to a gateway (Azure's managed endpoint front end; here `nbhelpers`' stand-in for
# it), which checks the key and the limits and passes it on to Microsoft's inference server, `azmlinfsrv`'s app in a
# gunicorn worker. The server calls the scoring script's `run()`, which asks the pipeline for images and returns the
# contract's JSON, back along the same path.

# %%
stages = [
    ("client", "requests or\nEndpointClient\n(retries, backoff)"),
    ("gateway", "key (401), in flight (429),\ntimeout (408), size (413)\nAzure: endpoint front end"),
    ("inference server", "azmlinfsrv app\nin a gunicorn worker\n(same on Azure)"),
    ("scoring script", "online_score.py\ninit(): load once\nrun(): each request"),
    ("pipeline", "diffusers pipeline\n(ScoringService:\nvalidate, generate)"),
]
links = ["POST /score\nBearer key", "Unix socket\n(private)", "run(body,\nheaders)", "generate()"]
fig, ax = plt.subplots(figsize=(13, 2.9), layout="constrained")
for index, (title, detail) in enumerate(stages):
    x = index * 2.6
    ax.add_patch(FancyBboxPatch((x, 0), 1.9, 1.5, boxstyle="round,pad=0.05", facecolor=f"C{index}", alpha=0.25))
    ax.text(x + 0.95, 1.22, title, ha="center", va="center", fontsize=10, weight="bold")
    ax.text(x + 0.95, 0.55, detail, ha="center", va="center", fontsize=7.5)
for index, link in enumerate(links):
    x = index * 2.6 + 1.95
    ax.annotate("", xy=(x + 0.6, 0.9), xytext=(x, 0.9), arrowprops={"arrowstyle": "->", "lw": 1.5})
    ax.annotate("", xy=(x, 0.45), xytext=(x + 0.6, 0.45), arrowprops={"arrowstyle": "->", "lw": 1, "color": "gray"})
    ax.text(x + 0.3, 1.0, link, ha="center", va="bottom", fontsize=7)
ax.text(
    5.2, -0.35, "gray arrows: the answer (contract JSON: base64 PNG per prompt) going back", ha="center", fontsize=8
)
ax.set_xlim(-0.2, 12.4)
ax.set_ylim(-0.5, 1.75)
ax.set_axis_off()
ax.set_title("A request to the local endpoint, left to right (boxes: processes and code; arrows: calls)")
plt.show()

# %% [markdown]
# The scoring script is the part you would write for any model. The server calls `init()` once when the deployment
# starts, so the model is loaded before the first request; then it calls `run()` for every request, with the raw
# JSON body and the headers, and sends back what `run()` returns. Here both hand the work to `ScoringService`
# (`nbhelpers/endpoints/scoring_service.py`), which validates the request, generates and builds the response.

# %%
print(files("nbhelpers.endpoints.scoring").joinpath("online_score.py").read_text(encoding="utf-8"))

# %% [markdown]
# ## 2. Start the local server
#
# `local_server` runs `nbhelpers serve` in a subprocess (in a terminal: `NBHELPERS_API_KEY=... nbhelpers serve
# --model deci-v1 --port 5031`; the key comes from the environment, never the command line, where `ps` shows it).
# Inside, `azmlinfsrv` runs `online_score.py` behind a gateway on 127.0.0.1 that checks the key and the body size,
# answers **429** beyond `2 x max_concurrent_requests_per_instance` requests in flight and **408** past
# `request_timeout_ms`. An `ExitStack` keeps the server open across cells until section 5 closes it.

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
# ## 3. The contract's sample request

# %%
sample = {
    "input_data": {
        "columns": ["prompt"],
        "data": PROMPTS,
        "index": list(range(len(PROMPTS))),
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
# ## 4. Busy and slow: the 429 and 408 you will meet in production
#
# A managed online endpoint scores `max_concurrent_requests_per_instance` requests at once per instance (1 here,
# as on a GPU), queues as many again, and answers **429 Too Many Requests** to the rest. Azure's docs ask clients to
# back off and promise no `Retry-After` header; the local gateway sends one, learnt from recent requests. Six
# requests sent at once:

# %%
busy = {"input_data": {"data": ["an owl"], "parameters": {"num_inference_steps": busy_steps} if busy_steps else {}}}


def post(_):
    start = time.perf_counter()
    r = requests.post(url + "/score", json=busy, headers=auth, timeout=600)
    timing = RequestTiming((Attempt(start, time.perf_counter(), r.status_code),))  # one attempt: no retries
    return r.status_code, r.headers.get("Retry-After"), timing


with concurrent.futures.ThreadPoolExecutor(6) as pool:
    answers = list(pool.map(post, range(6)))
for status, retry_after, _ in answers:
    print(status, f"Retry-After: {retry_after} s" if retry_after else "")
raw_timings = [timing for _, _, timing in answers]

# %% [markdown]
# `EndpointClient` backs off with urllib3's `Retry` (waits of 0, 2, 4, 8... x `backoff_s`, or a `Retry-After` when
# one comes) for 408, 429, 502, 503, 504 and failed connections. It does not retry input errors (400, 401, 413,
# 422) or 424, the managed endpoint's answer when the scoring container answered an error (its code and reason in
# the `ms-azureml-model-error-*` headers; possibly a model failure). The same six requests through it all succeed;
# `record_timings=True` keeps every attempt for the timeline below.

# %%
logging.basicConfig(format="%(message)s")
logging.getLogger("urllib3.util.retry").setLevel(logging.DEBUG)
client = EndpointClient(url + "/score", key=API_KEY, retries=8, backoff_s=0.5, record_timings=True)
start = time.perf_counter()
with concurrent.futures.ThreadPoolExecutor(6) as pool:
    results = list(pool.map(lambda _: client.score(busy), range(6)))
logging.getLogger("urllib3.util.retry").setLevel(logging.WARNING)
print(f"{len(results)} of 6 answered with images in {time.perf_counter() - start:.1f} s")
client_timings = list(client.timings)

# %% [markdown]
# Each bar is one attempt, from sending to the answer (the dot), coloured by its status; a dotted line is a
# request's whole life and a triangle marks a retry being sent. Without retries, the requests beyond the two places
# are turned away at once; with them, the client waits (backoff or `Retry-After`) and tries again until one is free.


# %%
def plot_timeline(ax, timings, title):
    """One row per request: its attempts as bars coloured by status, the waits between them dotted."""
    colours = {200: "tab:green", 429: "tab:orange", 408: "tab:red"}
    origin = min(t.start_s for t in timings)
    for row, timing in enumerate(sorted(timings, key=lambda t: t.start_s)):
        ax.hlines(row, timing.start_s - origin, timing.end_s - origin, colors="gray", linestyles=":")
        for attempt in timing.attempts:  # a bar from sending to the answer, a dot at the answer (quick 429s are dots)
            colour = colours.get(attempt.status, "tab:gray")
            ax.barh(row, attempt.end_s - attempt.start_s, left=attempt.start_s - origin, height=0.5, color=colour)
            ax.plot(attempt.end_s - origin, row, marker="o", color=colour, markersize=5)
        for attempt in timing.attempts[1:]:
            ax.plot(attempt.start_s - origin, row, marker=">", color="black", markersize=6)
    ax.set_yticks(range(len(timings)), [f"request {i + 1}" for i in range(len(timings))])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first request was sent")
    ax.set_ylabel("request (by start)")
    ax.set_title(title, fontsize=9)


fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), layout="constrained")
plot_timeline(axes[0], raw_timings, "six requests at once, no retries")
plot_timeline(axes[1], client_timings, "the same through EndpointClient (retries=8)")
legend = [Patch(color=c, label=f"{s}") for s, c in ((200, "tab:green"), (429, "tab:orange"), (408, "tab:red"))]
axes[1].legend(
    handles=[*legend, plt.Line2D([], [], marker=">", color="black", linestyle="", label="retry sent")], fontsize=7
)
fig.suptitle(f"Concurrent requests to the local endpoint (max_concurrent_requests_per_instance=1){mark}")
plt.show()

# %% [markdown]
# A request still running after `request_timeout_ms` (Azure's default is 5000 ms; text-to-image deployments raise
# it) gets **408**. A second local server with a short timeout (`SHORT_TIMEOUT_MS`) shows it on any machine. On
# Azure the container keeps working on a timed-out request; this server stops the generation at the next denoising
# step, so the slot is free at once. A client that retries a 408 only helps if the next try is faster; it says why
# it gave up:

# %%
short_url = servers.enter_context(
    local_server(
        MODEL,
        port=PORT + 1,
        stand_in=stand_in,
        api_key=API_KEY,
        max_concurrent_requests_per_instance=1,
        request_timeout_ms=short_timeout_ms,
        log_file=output / "server-short-timeout.log",
    )
)
heavy = {  # the contract's most prompts and steps, at 768 px: even a fast GPU should run past the short timeout
    "input_data": {
        "data": ["a castle", "a forest", "a lake", "a city"],
        "parameters": {"num_inference_steps": 150, **long_size},
    }
}
start = time.perf_counter()
r = requests.post(short_url + "/score", json=heavy, headers=auth, timeout=600)
seconds = time.perf_counter() - start
if r.status_code == 200:  # the answer is the contract's list of rows
    print(f"200 after {seconds:.1f} s: this machine made {len(r.json())} pictures within {short_timeout_ms} ms")
else:  # an error answer is {"error": {"status", "field", "message"}}
    print(
        r.status_code, f"after {seconds:.1f} s (request_timeout_ms={short_timeout_ms}):", r.json()["error"]["message"]
    )
try:
    EndpointClient(short_url + "/score", key=API_KEY, retries=1, backoff_s=0.5).score(heavy)
except EndpointError as err:
    print("client:", err)
small = {"input_data": {"data": ["a small request"], "parameters": {"num_inference_steps": 2, **short_size}}}
start = time.perf_counter()
r = requests.post(short_url + "/score", json=small, headers=auth, timeout=600)
seconds = time.perf_counter() - start
if r.status_code == 200:
    print(f"a small request right after: 200 in {seconds:.1f} s; the stopped generation had freed its slot")
else:
    print(f"a small request right after: {r.status_code} in {seconds:.1f} s: {r.json()['error']['message']}")

# %% [markdown]
# ## 5. The client
#
# `EndpointClient` works the same against Azure (`https://<endpoint>.<region>.inference.ml.azure.com/score` and the
# endpoint key) and this server.

# %%
extra = {"num_inference_steps": steps} if steps else {}
generated = client.generate([CLIENT_PROMPT], **extra)
show_images([g.image for g in generated], [f"{g.prompt} (nsfw: {g.nsfw_content_detected}){mark}" for g in generated])
servers.close()  # stops both servers: their gateways and scoring workers
print("server stopped")

# %% [markdown]
# ## 6. Batch scoring over CSV files
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
# ## 7. Screening prompts and images with Azure AI Content Safety
#
# Azure ML's model catalog cards for SD v1.5 and DeciDiffusion (the latter retired from the catalog on 2026-07-31)
# point to samples that screen with Azure AI Content Safety, which scores a text or an image in four categories
# (Hate, SelfHarm, Sexual, Violence) with a severity of 0, 2, 4 or 6.
# `ContentSafetyScreen` blocks anything at or above a threshold (`CONTENT_SAFETY_THRESHOLD`, default 2, as in Azure's
# safe online sample). With `CONTENT_SAFETY_ENDPOINT` and `CONTENT_SAFETY_KEY` in the environment it calls your
# resource; without them a word list stands in for the service (it is not a classifier, and cannot see pictures).

# %%
screen = ContentSafetyScreen.from_environment()
screened_by = "Azure AI Content Safety"
if screen is None:
    screen = ContentSafetyScreen(WordListSafetyClient(SAFETY_STAND_IN_WORDS))
    screened_by = "offline stand-in: a word list, not the service"
# The second prompt is the one Azure's safe text-to-image sample shows being blocked.
unsafe = (
    "Photograph of a dog with severed leg and bleeding profusely from deep laceration to the lower extremities, "
    "exposing tissues and nerve."
)
table = pd.DataFrame(
    [{"input": f"prompt: {p[:60]}", **screen.text_severities(p)} for p in (PROMPTS[0], unsafe)]
    + [{"input": f"image: {generated[0].prompt[:53]}", **screen.image_severities(generated[0].image)}]
)
table["blocked"] = table[["Hate", "SelfHarm", "Sexual", "Violence"]].max(axis=1) >= screen.threshold
print(f"Screened by: {screened_by}; threshold {screen.threshold}")
table

# %% [markdown]
# The scoring service runs the same screen on every request when its environment has those variables: a blocked
# prompt is not generated, and its row comes back as a black image with `nsfw_content_detected: true`, as does a
# generated image the screen blocks. On Azure, give the deployment `environment_variables` with
# `CONTENT_SAFETY_ENDPOINT`, `CONTENT_SAFETY_KEY` and `CONTENT_SAFETY_THRESHOLD`, as Azure's safe sample does.

# %% [markdown]
# ## 8. Deploy to Azure ML (needs a workspace)
#
# `nbhelpers.endpoints.azure_deploy` builds the endpoints, deployments, environment, model asset and GPU cluster
# offline, with no credentials; the cells print them as the YAML `az ml ... create --file` takes. The online
# deployment's `request_settings` come from the `EndpointSettings` that configured the local server, and both GPU
# sizes default to `Standard_NC4as_T4_v3` (one T4; the V100 size older samples used was retired on 2025-09-30).
# Deploying runs only when the Azure parameters are set (and `azure-identity` can log in).

# %%
from nbhelpers.endpoints.azure_deploy import (
    as_yaml_dict,
    batch_deployment,
    batch_endpoint,
    clean_up,
    environment,
    gpu_cluster,
    online_deployment,
    online_endpoint,
    pipeline_model,
)
from nbhelpers.endpoints.settings import EndpointSettings

endpoint = online_endpoint(ONLINE_ENDPOINT_NAME)
deployment = online_deployment(
    ONLINE_ENDPOINT_NAME,
    settings=EndpointSettings(model=MODEL, request_timeout_ms=90_000),
    env=environment(ref=NBHELPERS_REF),
)
cluster = gpu_cluster(BATCH_COMPUTE)  # created in section 8's last cell only if your workspace has none of that name
print(json.dumps(as_yaml_dict(deployment), indent=2, default=str)[:1500])
print(json.dumps(as_yaml_dict(cluster), indent=2))

# %% [markdown]
# The scoring scripts import `nbhelpers`, so the deployment's image must install it: the environment's conda file
# pip-installs the package, with its `serving` extra, from your repository at `NBHELPERS_REF` (a pushed branch, tag
# or commit). A batch deployment needs a model asset: the pipeline folder (`pipe.save_pretrained(folder)`) uploaded
# and registered as a `custom_model`, where the scoring script finds `model_index.json` under `AZUREML_MODEL_DIR`.

# %%
print(json.dumps(as_yaml_dict(deployment.environment)["conda_file"], indent=2))
pipeline_folder = output / "pipeline"
model_asset = pipeline_model(pipeline_folder, name=f"{MODEL}-pipeline")
print(json.dumps(as_yaml_dict(model_asset), indent=2))

# %%
if not (AZURE_SUBSCRIPTION_ID and AZURE_RESOURCE_GROUP and AZURE_WORKSPACE):
    print(
        "Skipped: set AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZURE_WORKSPACE to deploy "
        "(this needs an Azure subscription with GPU quota; nothing is created otherwise)."
    )
else:
    from azure.ai.ml import Input, MLClient
    from azure.core.exceptions import ResourceNotFoundError
    from azure.identity import DefaultAzureCredential

    from nbhelpers.loading import load_pipeline

    ml = MLClient(DefaultAzureCredential(), AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZURE_WORKSPACE)
    ml.online_endpoints.begin_create_or_update(endpoint).result()
    ml.online_deployments.begin_create_or_update(deployment).result()
    endpoint.traffic = {deployment.name: 100}
    ml.online_endpoints.begin_create_or_update(endpoint).result()
    scoring_uri = ml.online_endpoints.get(ONLINE_ENDPOINT_NAME).scoring_uri
    key = ml.online_endpoints.get_keys(ONLINE_ENDPOINT_NAME).primary_key
    online_images = EndpointClient(scoring_uri, key=key).generate(sample["input_data"]["data"])
    show_images([g.image for g in online_images], [g.prompt for g in online_images])  # real weights on Azure

    load_pipeline(MODEL, stand_in=stand_in).save_pretrained(pipeline_folder)  # the folder the model asset uploads
    registered = ml.models.create_or_update(model_asset)
    print("model asset:", registered.id)
    try:
        ml.compute.get(BATCH_COMPUTE)  # an existing cluster of that name is used as it is
    except ResourceNotFoundError:
        ml.compute.begin_create_or_update(cluster).result()
    ml.batch_endpoints.begin_create_or_update(batch_endpoint(BATCH_ENDPOINT_NAME)).result()
    ml.batch_deployments.begin_create_or_update(
        batch_deployment(
            BATCH_ENDPOINT_NAME, model=registered, compute=BATCH_COMPUTE, model_name=MODEL, env=deployment.environment
        )
    ).result()
    job = ml.batch_endpoints.invoke(
        endpoint_name=BATCH_ENDPOINT_NAME, inputs={"data": Input(type="uri_folder", path=str(inputs))}
    )
    print("batch job:", job.name)

# %% [markdown]
# ## 9. Clean up: delete what the Azure section created
#
# An online endpoint bills for its instances for as long as it exists, answering requests or not; Azure's own
# text-to-image samples end with the same warning: delete the endpoint, or the billing meter keeps running. Deleting
# an endpoint deletes its deployments (batch jobs and their outputs stay). A batch endpoint uses compute only while
# a job runs, and a cluster with 0 minimum nodes costs nothing idle, so the cluster is deleted only with
# `DELETE_COMPUTE = True`.

# %%
if not (AZURE_SUBSCRIPTION_ID and AZURE_RESOURCE_GROUP and AZURE_WORKSPACE):
    print("Skipped: no Azure workspace was set, so nothing was created and nothing bills.")
else:
    deleted = clean_up(
        ml,
        online_endpoint=ONLINE_ENDPOINT_NAME,
        batch_endpoint=BATCH_ENDPOINT_NAME,
        compute=BATCH_COMPUTE if DELETE_COMPUTE else None,
    )
    for what, outcome in deleted.items():
        print(f"{what}: {outcome}")
