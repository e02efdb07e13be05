"""Build the Azure ML objects that deploy the scoring scripts (``azure-ai-ml`` SDK v2), without credentials.

The builders only create objects; deploying them needs an ``MLClient`` and a workspace::

    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential
    ml = MLClient(DefaultAzureCredential(), subscription_id, resource_group, workspace)
    ml.online_endpoints.begin_create_or_update(online_endpoint("deci-t2i")).result()
    ml.online_deployments.begin_create_or_update(online_deployment("deci-t2i", model_name="deci-v1")).result()

Models from the hub need no registered model: the scoring script downloads ``NBHELPERS_MODEL`` at start-up.
A registered model (a pipeline folder) can be given instead and is found through ``AZUREML_MODEL_DIR``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import yaml
from azure.ai.ml.constants import AssetTypes, BatchDeploymentOutputAction
from azure.ai.ml.entities import (
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

from nbhelpers.endpoints.settings import EndpointSettings

SCORING_FOLDER = Path(__file__).resolve().parent / "scoring"
#: A CUDA base image from Microsoft's registry; the conda file adds PyTorch, diffusers and this package.
DEFAULT_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04:latest"
DEFAULT_PIP_PACKAGES = (
    "torch>=2.1",
    "diffusers>=0.35",
    "transformers>=4.44",
    "accelerate>=0.33",
    "safetensors>=0.4",
    "azureml-inference-server-http>=1.3",
    "pandas>=2.0",
    "azure-ai-contentsafety>=1.0",
)


def environment(
    name: str = "nbhelpers-text-to-image",
    project_requirement: str = "diffusion-nbhelpers",
    base_image: str = DEFAULT_BASE_IMAGE,
) -> Environment:
    """A GPU inference environment: ``base_image`` plus a conda file with the serving packages.

    ``project_requirement`` is how pip installs this project in the image (e.g. ``git+https://...`` of your
    fork, or the package name once published).
    """
    conda = {
        "name": name,
        "channels": ["conda-forge"],
        "dependencies": ["python=3.11", "pip", {"pip": [*DEFAULT_PIP_PACKAGES, project_requirement]}],
    }
    return Environment(
        name=name,
        image=base_image,
        conda_file=conda,
        description="Text-to-image scoring with diffusers and nbhelpers (no remote code).",
    )


def _model(model: str | Path | None) -> str | Model | None:
    if model is None or (isinstance(model, str) and model.startswith("azureml:")):
        return model
    return Model(path=str(model), type=AssetTypes.CUSTOM_MODEL, description="A diffusers pipeline folder.")


def _deployment_basics(
    name: str, endpoint_name: str, model: str | Path | None, scoring_script: str, env: Environment | str | None
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
    model: str | Path | None = None,
    instance_type: str = "Standard_NC6s_v3",
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


def batch_endpoint(name: str) -> BatchEndpoint:
    """A batch endpoint (invoked with a folder of CSV files with a ``prompt`` column)."""
    return BatchEndpoint(name=name, description="Text-to-image batch scoring over CSV files of prompts.")


def batch_deployment(
    endpoint_name: str,
    *,
    model: str | Path,
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
    (``"azureml:name:version"``) or a local pipeline folder to upload; ``compute`` an AML compute cluster.
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
