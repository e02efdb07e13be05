"""The Azure ML text-to-image contract: validation, the real HTTP server, the client, batch, deployment objects."""

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import requests

from nbhelpers.endpoints.batch_runner import BatchFailedError, BatchInputError, run_batch
from nbhelpers.endpoints.client import EndpointClient, EndpointError, request_body
from nbhelpers.endpoints.contract import ContractError, decode_image, parse_request
from nbhelpers.endpoints.scoring_service import ScoringService
from nbhelpers.endpoints.serving import local_server

SAMPLE = {
    "input_data": {
        "columns": ["prompt"],
        "data": ["a photograph of an astronaut riding a horse", "lion holding hunted deer in grass fields"],
        "index": [0, 1],
        "parameters": {"num_inference_steps": 2, "guidance_scale": 7.5},
    }
}
KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}

BAD_REQUESTS = [
    ("{not json", 400, "body", "not valid JSON"),
    ({"data": ["x"]}, 400, "input_data", "is required"),
    ({"input_data": {"data": []}}, 400, "input_data.data", "non-empty list"),
    ({"input_data": {"data": ["a", "b"], "index": [0]}}, 400, "input_data.index", "one label per row (2)"),
    ({"input_data": {"data": ["ok", 7]}}, 400, "input_data.data[1]", "non-empty prompt string"),
    ({"input_data": {"data": ["  "]}}, 400, "input_data.data[0]", "non-empty prompt string"),
    ({"input_data": {"data": ["a", "b", "c", "d"]}}, 413, "input_data.data", "at most 3 per request"),
    ({"input_data": {"data": ["a"], "parameters": {"num_inference_steps": 0}}}, 400,
     "input_data.parameters.num_inference_steps", "between 1 and 150"),
    ({"input_data": {"data": ["a"], "parameters": {"guidance_scale": 99}}}, 400,
     "input_data.parameters.guidance_scale", "between 0.0 and 30.0"),
    ({"input_data": {"data": ["a"], "parameters": {"height": 100}}}, 400, "input_data.parameters.height",
     "multiple of 8"),
    ({"input_data": {"data": ["a"], "parameters": {"sampler": "euler"}}}, 400, "input_data.parameters",
     "unknown ['sampler']"),
    ({"input_data": {"columns": ["text"], "data": ["a"]}}, 400, "input_data.columns", 'contains "prompt"'),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("body, status, field, message", BAD_REQUESTS)
def test_contract_validation_names_field_and_range(body, status, field, message):
    with pytest.raises(ContractError) as info:
        parse_request(json.dumps(body) if isinstance(body, dict) else body, max_rows=3)
    assert (info.value.status, info.value.field) == (status, field)
    assert message in info.value.message


def test_both_data_layouts():
    rows = parse_request({"input_data": {"columns": ["id", "prompt"], "data": [[1, "a fox"], [2, "a cat"]]}})
    flat = parse_request({"input_data": {"data": ["a fox", "a cat"], "index": ["x", "y"]}})
    assert rows.prompts == flat.prompts == ["a fox", "a cat"]
    assert flat.index == ["x", "y"] and rows.index == [0, 1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with local_server("deci-v1", port=_free_port(), tiny=True, api_key=KEY, max_rows=3, max_concurrency=1,
                      queue_timeout_s=0.2, log_file=log) as url:
        yield url


def test_sample_request_gets_the_documented_response(server):
    response = requests.post(server + "/score", json=SAMPLE, headers=AUTH, timeout=120)
    assert response.status_code == 200
    rows = response.json()
    assert [r["prompt"] for r in rows] == SAMPLE["input_data"]["data"]
    for row in rows:
        assert set(row) == {"prompt", "generated_image", "nsfw_content_detected"}
        assert row["nsfw_content_detected"] is False  # the tiny pipeline has a safety checker, which ran
        image = decode_image(row["generated_image"])
        assert image.size == (64, 64) and np.asarray(image).std() > 0


@pytest.mark.parametrize("body, status, field, message", BAD_REQUESTS)
def test_bad_requests_get_4xx_json_over_http(server, body, status, field, message):
    data = body if isinstance(body, str) else json.dumps(body)
    response = requests.post(server + "/score", data=data, headers=AUTH, timeout=60)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["field"] == field and message in error["message"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_missing_or_wrong_key_gets_401(server, headers):
    response = requests.post(server + "/score", json=SAMPLE, headers=headers, timeout=60)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_burst_gets_only_200_or_503_and_the_server_stays_healthy(server):
    slow = {"input_data": {"data": ["an owl"], "parameters": {"num_inference_steps": 30}}}

    def call(_):
        return requests.post(server + "/score", json=slow, headers=AUTH, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(call, range(6)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes
    assert all(int(r.headers["Retry-After"]) >= 1 for r in responses if r.status_code == 503)
    assert requests.get(server + "/", timeout=10).status_code == 200
    assert requests.post(server + "/score", json=SAMPLE, headers=AUTH, timeout=120).status_code == 200


def test_client_against_the_local_server(server):
    client = EndpointClient(server + "/score", key=KEY, retries=5, backoff_s=0.2)
    images = client.generate(["a red fox"], num_inference_steps=2)
    assert len(images) == 1 and images[0].image.size == (64, 64) and images[0].nsfw_content_detected is False
    with pytest.raises(EndpointError) as info:
        EndpointClient(server + "/score", key="nope", retries=0).generate(["a red fox"])
    assert info.value.status == 401


def test_client_retries_busy_answers_with_backoff(monkeypatch):
    answers = [SimpleNamespace(status_code=503, headers={"Retry-After": "1"}, json=lambda: {"error": "busy"}),
               SimpleNamespace(status_code=429, headers={}, json=lambda: {"error": "slow down"}),
               SimpleNamespace(status_code=200, headers={}, json=lambda: [{"prompt": "p"}])]
    calls, sleeps = [], []
    session = SimpleNamespace(post=lambda url, **kw: calls.append(kw) or answers[len(calls) - 1])
    monkeypatch.setattr("nbhelpers.endpoints.client.time.sleep", sleeps.append)
    client = EndpointClient("http://127.0.0.1:9/score", key="k", retries=3, backoff_s=0.5, session=session)
    assert client.score(request_body(["p"])) == [{"prompt": "p"}]
    assert len(calls) == 3 and calls[0]["headers"]["Authorization"] == "Bearer k"
    assert sleeps == [1.0, 2.0]  # Retry-After first, then doubled backoff
    session.post = lambda url, **kw: SimpleNamespace(status_code=503, headers={}, json=lambda: {})
    with pytest.raises(EndpointError, match="gave up after 4 attempts"):
        client.score(request_body(["p"]))


def _write_csvs(folder, rows_per_file=(3, 2)):
    folder.mkdir(parents=True)
    for number, count in enumerate(rows_per_file):
        pd.DataFrame({"id": range(count), "prompt": [f"prompt {number}-{i}" for i in range(count)]}).to_csv(
            folder / f"part-{number}.csv", index=False)


def test_batch_run_killed_midway_and_rerun_has_every_row_exactly_once(tmp_path):
    _write_csvs(tmp_path / "in", (4, 3))
    code = textwrap.dedent(f"""
        from nbhelpers.endpoints.batch_runner import run_batch
        run_batch({str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r}, model="deci-v1", tiny=True,
                  parameters={{"num_inference_steps": 20}}, progress=False)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "NBHELPERS_TINY": "1"})
    journal = tmp_path / "out" / "progress.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = len(journal.read_text().splitlines())
    assert 2 <= finished_before < 7, "the run should have been killed midway"
    report = run_batch(tmp_path / "in", tmp_path / "out", model="deci-v1", tiny=True,
                       parameters={"num_inference_steps": 2}, progress=False)
    assert report.skipped >= 2 and report.succeeded + report.skipped == 7 and report.failed == 0
    predictions = pd.read_csv(report.predictions)
    assert len(predictions) == 7
    assert not predictions.duplicated(["file", "row"]).any()
    assert set(predictions["status"]) == {"ok"}
    assert all((tmp_path / "out" / name).exists() for name in predictions["image"])
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left


def test_batch_failures_are_recorded_and_the_threshold_decides(tmp_path, tiny_deci):
    (tmp_path / "in").mkdir()
    pd.DataFrame({"prompt": ["a fox", "", "a cat"]}).to_csv(tmp_path / "in" / "a.csv", index=False)
    with pytest.raises(BatchFailedError, match="1 row\\(s\\) failed, more than error_threshold=0"):
        run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, parameters={"num_inference_steps": 1},
                  progress=False)
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(predictions["status"]) == ["ok", "failed", "ok"]
    assert "empty prompt" in predictions["error"][1]
    report = run_batch(tmp_path / "in", tmp_path / "out", pipe=tiny_deci, error_threshold=1, progress=False)
    assert report.skipped == 2 and report.failed == 1


def test_batch_input_errors(tmp_path):
    with pytest.raises(BatchInputError, match="does not exist"):
        run_batch(tmp_path / "missing", tmp_path / "out", pipe=object())
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchInputError, match="no .csv files"):
        run_batch(tmp_path / "empty", tmp_path / "out", pipe=object())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.csv").write_text("text\nhello\n")
    with pytest.raises(BatchInputError, match="no 'prompt' column"):
        run_batch(tmp_path / "bad", tmp_path / "out", pipe=object())


def test_batch_scoring_script_contract(tmp_path, monkeypatch, tiny_deci):
    from nbhelpers.endpoints.scoring import batch_score

    _write_csvs(tmp_path / "in", (2,))
    monkeypatch.setattr(batch_score, "pipe", tiny_deci)
    monkeypatch.setattr(batch_score, "output_folder", tmp_path / "out")
    (tmp_path / "out").mkdir()
    frame = batch_score.run([str(tmp_path / "in" / "part-0.csv")])
    assert list(frame["prompt"]) == ["prompt 0-0", "prompt 0-1"] and set(frame["status"]) == {"ok"}
    assert all((tmp_path / "out" / name).exists() for name in frame["image"])


class _FakeSafetyClient:
    def __init__(self, blocked_words):
        self.blocked_words = blocked_words

    def analyze_text(self, options):
        severity = 4 if any(w in options.text for w in self.blocked_words) else 0
        return SimpleNamespace(categories_analysis=[SimpleNamespace(category="Violence", severity=severity)])

    def analyze_image(self, options):
        assert options.image.content[:4] == b"\x89PNG"
        return SimpleNamespace(categories_analysis=[SimpleNamespace(category="Sexual", severity=0)])


def test_content_safety_blanks_blocked_rows(tiny_deci):
    from nbhelpers.endpoints.content_safety import ContentSafetyScreen

    service = ScoringService(tiny_deci, screen=ContentSafetyScreen(_FakeSafetyClient(["gore"]), threshold=2))
    body = json.dumps({"input_data": {"data": ["a fox", "gore everywhere"], "parameters": {"num_inference_steps": 1}}})
    status, rows, _ = service.handle(body, {})
    assert status == 200
    assert [r["nsfw_content_detected"] for r in rows] == [False, True]
    assert np.asarray(decode_image(rows[1]["generated_image"])).max() == 0
    assert np.asarray(decode_image(rows[0]["generated_image"])).max() > 0


def test_no_safety_checker_gives_null(tmp_path):
    from nbhelpers.loading import load_pipeline

    service = ScoringService(load_pipeline("sd-v1-4", tiny=True, device="cpu", safety_checker=False, progress=False))
    body = json.dumps({"input_data": {"data": ["x"], "parameters": {"num_inference_steps": 1}}})
    status, rows, _ = service.handle(body)
    assert status == 200 and rows[0]["nsfw_content_detected"] is None


def test_azure_deployment_objects_validate_offline():
    from nbhelpers.endpoints.azure_deploy import (
        as_yaml_dict,
        batch_deployment,
        batch_endpoint,
        online_deployment,
        online_endpoint,
    )

    assert as_yaml_dict(online_endpoint("deci-t2i"))["auth_mode"] == "key"
    online = as_yaml_dict(online_deployment("deci-t2i", model_name="deci-v1", instance_type="Standard_NC6s_v3"))
    assert online["code_configuration"]["scoring_script"] == "online_score.py"
    assert os.path.isfile(os.path.join(online["code_configuration"]["code"], "online_score.py"))
    assert online["environment_variables"]["NBHELPERS_MODEL"] == "deci-v1"
    assert online["request_settings"]["max_concurrent_requests_per_instance"] == 1
    assert online["instance_type"] == "Standard_NC6s_v3" and "liveness_probe" in online
    assert "diffusion-nbhelpers" in json.dumps(online["environment"])
    assert as_yaml_dict(batch_endpoint("deci-batch"))["name"] == "deci-batch"
    batch = as_yaml_dict(batch_deployment("deci-batch", model="azureml:deci:1", compute="gpu-cluster"))
    settings = batch["settings"]
    assert (settings["mini_batch_size"], settings["output_file_name"], settings["output_action"]) == (
        1, "predictions.csv", "append_row")
    assert settings["error_threshold"] == 0 and settings["retry_settings"]["max_retries"] == 2
    assert batch["code_configuration"]["scoring_script"] == "batch_score.py"
