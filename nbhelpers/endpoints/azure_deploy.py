"""Build the Azure ML objects that deploy the scoring scripts (``azure-ai-ml`` SDK v2), without credentials.

The builders only create objects; deploying them needs an ``MLClient`` and a workspace::

    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential
    ml = MLClient(DefaultAzureCredential(), subscription_id, resource_group, workspace)
    ml.online_endpoints.begin_create_or_update(online_endpoint("deci-t2i")).result()
    ml.online_deployments.begin_create_or_update(online_deployment("deci-t2i", model_name="deci-v1")).result()

Models from the hub need no registered model for an online deployment: the scoring script downloads
``NBHELPERS_MODEL`` at start-up. A batch deployment takes a model asset: :func:`pipeline_model` makes one from a
pipeline folder (``pipe.save_pretrained(folder)``), uploaded as a ``custom_model``; the scoring scripts find it
through ``AZUREML_MODEL_DIR``. The image gets this package from its repository (:func:`package_requirement`).

Online endpoints bill for their instances as long as they exist, serving or not: :func:`clean_up` deletes what a
deployment created.

GPU size: ``Standard_NC4as_T4_v3`` (one T4, 16 GB), a size Azure ML lists for managed online endpoints
(https://learn.microsoft.com/azure/machine-learning/reference-managed-online-endpoints-vm-sku-list). The V100
sizes older samples used (``Standard_NC6s_v3``) were retired on 2025-09-30
(https://learn.microsoft.com/azure/virtual-machines/ncv3-nc6s-nc12s-nc24s-retirement).
"""

from __future__ import annotations

import io
import json
import os
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from azure.ai.ml.constants import AssetTypes, BatchDeploymentOutputAction
from azure.ai.ml.entities import (
    AmlCompute,
    BatchEndpoint,
    BatchRetrySettings,
    CodeConfiguration,
    Environment,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
    ModelBatchDeployment,
    ModelBatchDeploymentSettings,
    ProbeSettings,
)
from azure.core.exceptions import ResourceNotFoundError

from nbhelpers.endpoints.settings import EndpointSettings
from nbhelpers.errors import ConfigurationError

SCORING_FOLDER = Path(__file__).resolve().parent / "scoring"
#: A CUDA base image from Microsoft's registry; the conda file adds this package, which brings PyTorch and diffusers.
DEFAULT_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04:latest"
#: The installed distribution whose metadata names the repository.
DISTRIBUTION = "diffusion-nbhelpers"
#: What the scoring scripts need beyond the package and its ``serving`` extra: the Content Safety client (only
#: it, not the whole ``azure`` extra, whose azure-ai-ml the container never uses).
DEFAULT_PIP_PACKAGES = ("azure-ai-contentsafety>=1.0",)
#: One NVIDIA T4 (16 GB): enough for one fp16 text-to-image pipeline; listed for managed online endpoints.
DEFAULT_GPU_INSTANCE_TYPE = "Standard_NC4as_T4_v3"


def repository_url() -> str:
    """The project's repository: ``NBHELPERS_REPO_URL``, else the installed package's ``Repository`` URL."""
    url = os.environ.get("NBHELPERS_REPO_URL")
    if not url:
        try:
            entries = metadata.metadata(DISTRIBUTION).get_all("Project-URL") or []
        except metadata.PackageNotFoundError:
            entries = []
        url = next((u.strip() for label, _, u in (e.partition(",") for e in entries) if label == "Repository"), "")
    if not url:
        raise ConfigurationError(
            f"No repository URL: {DISTRIBUTION} is not installed with its metadata. Set NBHELPERS_REPO_URL to your "
            "repository (e.g. https://github.com/you/diffusion-tutorials), or pass project_requirement."
        )
    return url.rstrip("/").removesuffix(".git")


def package_requirement(ref: str = "main", extras: tuple[str, ...] = ("serving",)) -> str:
    """The pip requirement that installs this package, with ``extras``, from its repository at ``ref``.

    For a github.com repository it names GitHub's archive of ``ref``, which pip installs without git in the image:
    ``"diffusion-nbhelpers[serving] @ https://github.com/your-org/diffusion-tutorials/archive/main.zip"``; other
    hosts get ``git+<url>@<ref>``. Azure builds the image from it, so ``ref`` (a branch, tag or commit) must be
    pushed; a commit pins the exact code you tested. The package's own metadata brings torch, diffusers and the
    rest.
    """
    url = repository_url()
    source = f"{url}/archive/{ref}.zip" if re.fullmatch(r"https://github\.com/[^/]+/[^/]+", url) else f"git+{url}@{ref}"
    suffix = f"[{','.join(extras)}]" if extras else ""
    return f"{DISTRIBUTION}{suffix} @ {source}"


def environment(
    name: str = "nbhelpers-text-to-image",
    project_requirement: str | None = None,
    base_image: str = DEFAULT_BASE_IMAGE,
    ref: str = "main",
) -> Environment:
    """A GPU inference environment: ``base_image`` plus a conda file that pip-installs this package.

    ``project_requirement`` is how pip installs this project in the image; by default
    :func:`package_requirement` at ``ref`` (the repository at that branch, tag or commit, with the ``serving``
    extra that brings Microsoft's inference server). A private fork needs a URL Azure's image build can read.
    """
    requirement = project_requirement or package_requirement(ref)
    conda = {
        "name": name,
        "channels": ["conda-forge"],
        "dependencies": ["python=3.11", "pip", {"pip": [requirement, *DEFAULT_PIP_PACKAGES]}],
    }
    return Environment(
        name=name,
        image=base_image,
        conda_file=conda,
        description="Text-to-image scoring with diffusers and nbhelpers (no remote code).",
    )


def pipeline_model(
    folder: str | Path, name: str = "text-to-image-pipeline", version: str | None = None, description: str = ""
) -> Model:
    """A model asset made from a diffusers pipeline folder (``pipe.save_pretrained(folder)``), type ``custom_model``.

    ``ml_client.models.create_or_update(pipeline_model(folder))`` uploads the folder and registers it (a new
    version each time unless ``version`` is given); pass the returned model to :func:`batch_deployment`. In the
    container the folder sits under ``AZUREML_MODEL_DIR``, where the scoring scripts look for ``model_index.json``.
    """
    return Model(
        path=str(folder),
        type=AssetTypes.CUSTOM_MODEL,
        name=name,
        version=version,
        description=description or "A diffusers text-to-image pipeline folder (model_index.json and components).",
    )


def _model(model: str | Path | Model | None) -> str | Model | None:
    if model is None or isinstance(model, Model) or (isinstance(model, str) and model.startswith("azureml:")):
        return model
    return pipeline_model(model)


def _deployment_basics(
    name: str,
    endpoint_name: str,
    model: str | Path | Model | None,
    scoring_script: str,
    env: Environment | str | None,
) -> dict[str, Any]:
    """What online and batch deployments share: names, model, scoring script and environment."""
    return {
        "name": name,
        "endpoint_name": endpoint_name,
        "model": _model(model),
        "code_configuration": CodeConfiguration(code=str(SCORING_FOLDER), scoring_script=scoring_script),
        "environment": env or environment(),
    }


def online_endpoint(name: str, auth_mode: str = "key") -> ManagedOnlineEndpoint:
    """A managed online endpoint called with ``Authorization: Bearer <key>`` (``auth_mode="key"``)."""
    return ManagedOnlineEndpoint(
        name=name, auth_mode=auth_mode, description="Text-to-image, Azure ML text-to-image JSON contract."
    )


def online_deployment(
    endpoint_name: str,
    *,
    name: str = "blue",
    model_name: str = "deci-v1",
    model: str | Path | Model | None = None,
    instance_type: str = DEFAULT_GPU_INSTANCE_TYPE,
    instance_count: int = 1,
    env: Environment | str | None = None,
    settings: EndpointSettings | None = None,
    environment_variables: dict[str, str] | None = None,
) -> ManagedOnlineDeployment:
    """A GPU deployment of ``nbhelpers/endpoints/scoring/online_score.py`` on ``endpoint_name``.

    ``settings`` (default ``EndpointSettings(model=model_name)``: one request generating at a time per
    instance, as a GPU makes one batch at a time, and a 90 s request timeout) become both the scoring script's
    ``NBHELPERS_*`` variables and the deployment's ``request_settings``, the same values ``nbhelpers serve``
    enforces locally. The probes allow for the model download at start-up.
    """
    settings = settings or EndpointSettings(model=model_name)
    variables = {**settings.to_environment(), **(environment_variables or {})}
    return ManagedOnlineDeployment(
        **_deployment_basics(name, endpoint_name, model, "online_score.py", env),
        instance_type=instance_type,
        instance_count=instance_count,
        environment_variables=variables,
        request_settings=settings.request_settings(),
        liveness_probe=ProbeSettings(initial_delay=600, period=30, timeout=10, failure_threshold=30),
        readiness_probe=ProbeSettings(initial_delay=600, period=10, timeout=10, failure_threshold=30),
    )


def gpu_cluster(name: str, *, size: str = DEFAULT_GPU_INSTANCE_TYPE, max_instances: int = 1) -> AmlCompute:
    """An Azure ML compute cluster for batch jobs that scales to 0 nodes when idle (so it costs nothing then) and
    up to ``max_instances`` nodes of ``size`` while a job runs."""
    return AmlCompute(name=name, size=size, min_instances=0, max_instances=max_instances)


def batch_endpoint(name: str) -> BatchEndpoint:
    """A batch endpoint (invoked with a folder of CSV files with a ``prompt`` column)."""
    return BatchEndpoint(name=name, description="Text-to-image batch scoring over CSV files of prompts.")


def batch_deployment(
    endpoint_name: str,
    *,
    model: str | Path | Model,
    compute: str,
    name: str = "default",
    model_name: str = "deci-v1",
    env: Environment | str | None = None,
    instance_count: int = 1,
    error_threshold: int = 0,
    max_retries: int = 2,
    retry_timeout_s: int = 3000,
) -> ModelBatchDeployment:
    """A batch deployment of ``nbhelpers/endpoints/scoring/batch_score.py`` with the published sample's settings.

    ``mini_batch_size=1`` (one CSV file per ``run`` call), ``output_file_name="predictions.csv"`` with
    ``append_row``, ``error_threshold=0``, one worker per instance, 2 retries. ``model`` is a registered model
    (the ``Model`` ``ml_client.models.create_or_update`` returned, or ``"azureml:name:version"``), a
    :func:`pipeline_model`, or a local pipeline folder to upload; ``compute`` an AML compute cluster.
    """
    return ModelBatchDeployment(
        **_deployment_basics(name, endpoint_name, model, "batch_score.py", env),
        compute=compute,
        settings=ModelBatchDeploymentSettings(
            mini_batch_size=1,
            instance_count=instance_count,
            max_concurrency_per_instance=1,
            output_action=BatchDeploymentOutputAction.APPEND_ROW,
            output_file_name="predictions.csv",
            error_threshold=error_threshold,
            retry_settings=BatchRetrySettings(max_retries=max_retries, timeout=retry_timeout_s),
            environment_variables={"NBHELPERS_MODEL": model_name},  # the batch script reads only the model
        ),
    )


def as_yaml_dict(entity: Any) -> dict[str, Any]:
    """The entity as the YAML dict ``az ml ... create --file`` takes, via its public ``dump`` (validates offline)."""
    stream = io.StringIO()
    returned = entity.dump(stream)
    # Deployments write YAML to the stream; endpoints (azure-ai-ml 1.x) return the same dict and write nothing.
    return yaml.safe_load(stream.getvalue()) if stream.getvalue() else json.loads(json.dumps(returned))


def clean_up(
    ml_client: Any,
    *,
    online_endpoint: str | None = None,
    batch_endpoint: str | None = None,
    compute: str | None = None,
) -> dict[str, str]:
    """Delete what a deployment created and wait until each is gone; return ``{"what name": "deleted" | "not found"}``.

    Deleting an endpoint deletes all its deployments (batch jobs and their outputs stay). An online endpoint bills
    for its instances for as long as it exists, so delete it when you are done; a batch endpoint uses compute
    only while a job runs. ``compute`` (a cluster) is deleted only when named: a cluster with 0 minimum nodes
    costs nothing while idle, and other work may use it.
    """

    deletions = [
        (f"online endpoint {online_endpoint}", lambda: ml_client.online_endpoints.begin_delete(name=online_endpoint)),
        (f"batch endpoint {batch_endpoint}", lambda: ml_client.batch_endpoints.begin_delete(name=batch_endpoint)),
        (f"compute {compute}", lambda: ml_client.compute.begin_delete(compute)),
    ]
    wanted = (online_endpoint, batch_endpoint, compute)
    outcome: dict[str, str] = {}
    for (what, delete), name in zip(deletions, wanted, strict=True):
        if not name:
            continue
        try:
            delete().result()
            outcome[what] = "deleted"
        except ResourceNotFoundError:
            outcome[what] = "not found"
    return outcome
