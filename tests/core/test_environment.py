import json

from nbhelpers.environment import detect_platform, environment_report


def test_report_on_this_machine():
    report = environment_report()
    assert report.device in ("cpu", "cuda", "mps")
    assert report.packages["torch"] and report.packages["diffusers"]
    json.dumps(report.as_dict())
    assert "diffusers" in str(report)


def test_platform_detection(monkeypatch):
    for key in (
        "COLAB_RELEASE_TAG",
        "COLAB_GPU",
        "PAPERSPACE_NOTEBOOK_REPO_ID",
        "PS_API_KEY",
        "KAGGLE_KERNEL_RUN_TYPE",
    ):
        monkeypatch.delenv(key, raising=False)
    assert detect_platform() == "local"
    monkeypatch.setenv("PAPERSPACE_NOTEBOOK_REPO_ID", "abc")
    assert detect_platform() == "paperspace"
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release")
    assert detect_platform() == "colab"
