"""Azure ML objects built offline: where the image gets nbhelpers, the pipeline model asset, and the clean-up."""

import pytest

from nbhelpers.endpoints import azure_deploy
from nbhelpers.endpoints.azure_deploy import (
    as_yaml_dict,
    batch_deployment,
    clean_up,
    environment,
    gpu_cluster,
    online_deployment,
    package_requirement,
    pipeline_model,
)
from nbhelpers.errors import ConfigurationError


def test_the_image_installs_the_package_from_its_repository_at_a_ref(monkeypatch):
    monkeypatch.delenv("NBHELPERS_REPO_URL", raising=False)
    repo = azure_deploy.repository_url()  # from the installed package's metadata ([project.urls] Repository)
    assert repo.startswith("https://") and not repo.endswith((".git", "/"))
    monkeypatch.setenv("NBHELPERS_REPO_URL", "https://github.com/me/diffusion-tutorials.git")
    assert package_requirement("3f2a1b0") == (
        "diffusion-nbhelpers[serving] @ https://github.com/me/diffusion-tutorials/archive/3f2a1b0.zip"
    )  # GitHub's archive: pip needs no git in the image
    monkeypatch.setenv("NBHELPERS_REPO_URL", "https://gitlab.example/me/tutorials")
    assert package_requirement(extras=()) == "diffusion-nbhelpers @ git+https://gitlab.example/me/tutorials@main"
    conda = as_yaml_dict(environment(ref="v0.1.0"))["conda_file"]
    pip = conda["dependencies"][-1]["pip"]
    assert pip[0] == "diffusion-nbhelpers[serving] @ git+https://gitlab.example/me/tutorials@v0.1.0"
    assert "azure-ai-contentsafety>=1.0" in pip and not any(p.startswith("torch") for p in pip)  # torch: from nbhelpers
    custom = as_yaml_dict(environment(project_requirement="diffusion-nbhelpers[serving]==0.1.0"))
    assert custom["conda_file"]["dependencies"][-1]["pip"][0] == "diffusion-nbhelpers[serving]==0.1.0"


def test_no_repository_url_is_a_configuration_error(monkeypatch):
    monkeypatch.delenv("NBHELPERS_REPO_URL", raising=False)
    monkeypatch.setattr(azure_deploy, "DISTRIBUTION", "not-installed-anywhere")
    with pytest.raises(ConfigurationError, match="Set NBHELPERS_REPO_URL"):
        package_requirement()


def test_the_batch_deployment_uploads_a_pipeline_folder_as_a_custom_model(tmp_path):
    model = pipeline_model(tmp_path / "pipeline", name="deci-pipeline")
    asset = as_yaml_dict(model)
    assert (asset["type"], asset["name"], asset["path"]) == (
        "custom_model",
        "deci-pipeline",
        str(tmp_path / "pipeline"),
    )
    for given in (model, tmp_path / "pipeline"):  # the asset, or the folder it is made from
        deployed = as_yaml_dict(batch_deployment("deci-batch", model=given, compute="gpu-cluster"))["model"]
        assert deployed["type"] == "custom_model" and deployed["path"] == str(tmp_path / "pipeline")
    registered = as_yaml_dict(batch_deployment("deci-batch", model="azureml:deci-pipeline:3", compute="gpu-cluster"))
    assert registered["model"] == "azureml:deci-pipeline:3"


def test_gpu_deployments_and_clusters_default_to_a_current_t4_size_and_the_cluster_idles_at_zero_nodes():
    assert as_yaml_dict(online_deployment("deci-t2i"))["instance_type"] == "Standard_NC4as_T4_v3"
    cluster = as_yaml_dict(gpu_cluster("gpu-cluster"))
    assert (cluster["type"], cluster["name"], cluster["size"]) == ("amlcompute", "gpu-cluster", "Standard_NC4as_T4_v3")
    assert (cluster["min_instances"], cluster["max_instances"]) == (0, 1)
    assert as_yaml_dict(gpu_cluster("big", size="Standard_NC24ads_A100_v4", max_instances=2))["max_instances"] == 2


class _Poller:
    def __init__(self, log, what, missing):
        self.log, self.what, self.missing = log, what, missing

    def result(self):
        from azure.core.exceptions import ResourceNotFoundError

        if self.what in self.missing:
            raise ResourceNotFoundError(f"{self.what} not found")
        self.log.append(self.what)  # deleted only once its poller finished


class _Operations:
    def __init__(self, kind, log, missing):
        self.kind, self.log, self.missing = kind, log, missing

    def begin_delete(self, name):
        return _Poller(self.log, f"{self.kind}:{name}", self.missing)


class _FakeMLClient:
    def __init__(self, missing=()):
        self.deleted: list[str] = []
        for kind in ("online_endpoints", "batch_endpoints", "compute"):
            setattr(self, kind, _Operations(kind, self.deleted, set(missing)))


def test_clean_up_deletes_the_endpoints_and_the_cluster_only_when_named():
    ml = _FakeMLClient(missing={"batch_endpoints:gone"})
    outcome = clean_up(ml, online_endpoint="deci-t2i", batch_endpoint="gone")
    assert ml.deleted == ["online_endpoints:deci-t2i"]  # no compute named: the cluster stays
    assert outcome == {"online endpoint deci-t2i": "deleted", "batch endpoint gone": "not found"}
    clean_up(ml, compute="gpu-cluster")
    assert ml.deleted[-1] == "compute:gpu-cluster"
    assert clean_up(ml) == {}
