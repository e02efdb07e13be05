"""``nbhelpers serve`` over real HTTP on loopback: the contract, Azure ML's status codes, and abuse (issue 14).

Two servers (tiny model): ``server`` answers as azmlinfsrv does (container codes passed through), ``gateway``
rehearses the managed endpoint (424 for scoring errors) with a short request timeout, and is stopped with SIGTERM
by the module's last test.
"""

import base64
import concurrent.futures
import json
import os
import signal
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests

from nbhelpers.endpoints.client import EndpointClient, EndpointError
from nbhelpers.endpoints.contract import decode_image
from nbhelpers.endpoints.serving import local_server
from tests.endpoints.endpoint_cases import BAD_REQUESTS, HOSTILE_BODIES

KEY = "test-key-4c1d"
AUTH = {"Authorization": f"Bearer {KEY}"}
SAMPLE = {
    "input_data": {
        "columns": ["prompt"],
        "data": ["a photograph of an astronaut riding a horse", "lion holding hunted deer in grass fields"],
        "index": [0, 1],
        "parameters": {"num_inference_steps": 2, "guidance_scale": 7.5},
    }
}


def _descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo += children.get(current, [])
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _raw_exchange(url: str, data: bytes, wait_s: float = 15.0) -> bytes:
    """Send ``data`` on a new connection and return what the server answers within ``wait_s`` seconds."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait_s) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    return received


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The key comes through NBHELPERS_API_KEY (issue 14: it was dropped and the server ran without auth)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    server = local_server(
        "deci-v1",
        stand_in="tiny",
        api_key=KEY,
        max_rows=3,
        max_concurrent_requests_per_instance=2,
        header_timeout_s=1,
        body_timeout_s=2,
        max_body_bytes=256 * 1024,
        log_file=log,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(served):
    return served.url


def test_sample_request_gets_the_documented_response(server):
    response = requests.post(server + "/score", json=SAMPLE, headers=AUTH, timeout=300)
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


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_hostile_json_gets_400_over_http(server, name):
    body, field, message = HOSTILE_BODIES[name]
    response = requests.post(server + "/score", data=body.encode("utf-8", "surrogatepass"), headers=AUTH, timeout=60)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}]
)
def test_missing_or_wrong_key_gets_401(server, headers):
    response = requests.post(server + "/score", json=SAMPLE, headers=headers, timeout=60)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_lowercase_bearer_scheme_is_accepted(server):
    body = {"input_data": {"data": ["a fox"], "parameters": {"num_inference_steps": 1}}}
    response = requests.post(server + "/score", json=body, headers={"Authorization": f"bearer {KEY}"}, timeout=300)
    assert response.status_code == 200


def test_auth_and_size_are_decided_from_the_headers_before_the_body(server):
    """Issue 14: a 300 MB unauthenticated body was read whole before the 401."""
    head = "POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 314572800\r\n"
    start = time.monotonic()
    unauthenticated = _raw_exchange(server, (head + "\r\n").encode())  # no body is ever sent
    too_large = _raw_exchange(server, (head + f"Authorization: Bearer {KEY}\r\n\r\n").encode())
    chunked = _raw_exchange(
        server, f"POST /score HTTP/1.1\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    assert unauthenticated.startswith(b"HTTP/1.1 401")
    assert too_large.startswith(b"HTTP/1.1 413") and b"at most 262144" in too_large
    assert chunked.startswith(b"HTTP/1.1 411")
    assert time.monotonic() - start < 15


def test_a_large_unauthenticated_upload_gets_401_not_a_reset(server):
    body = b"x" * (8 * 2**20)  # the client sends all of it; the server discards it without keeping it
    response = requests.post(server + "/score", data=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 401


def test_stalled_clients_do_not_block_liveness_or_scoring(server):
    """Issue 14: 8 stalled partial uploads (as many as the server's threads) made GET / and /score time out."""
    address = urlsplit(server)
    stalled = []
    for number in range(16):
        sock = socket.create_connection((address.hostname, address.port), timeout=10)
        if number % 2:  # headers complete, body cut short
            head = f"POST /score HTTP/1.1\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 500\r\n\r\n"
            sock.sendall(head.encode() + b"{")
        else:  # headers cut short
            sock.sendall(b"POST /score HTTP/1.1\r\nContent-Le")
        stalled.append(sock)
    try:
        assert requests.get(server + "/", timeout=10).text == "Healthy"
        body = {"input_data": {"data": ["a fox"], "parameters": {"num_inference_steps": 1}}}
        assert requests.post(server + "/score", json=body, headers=AUTH, timeout=300).status_code == 200
        answers = [sock.recv(4096) for sock in stalled]  # header timeout 1 s, body timeout 2 s: 408, then closed
        assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[:2]
    finally:
        for sock in stalled:
            sock.close()


def test_beyond_twice_max_concurrent_requests_get_429_with_retry_after(server):
    slow = {"input_data": {"data": ["an owl"], "parameters": {"num_inference_steps": 40}}}

    def call(_):
        return requests.post(server + "/score", json=slow, headers=AUTH, timeout=600)

    with concurrent.futures.ThreadPoolExecutor(7) as pool:
        responses = list(pool.map(call, range(7)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(429) >= 3 and set(codes) == {200, 429}, codes  # at most 2 x 2 in flight
    assert all(int(r.headers["Retry-After"]) >= 1 for r in responses if r.status_code == 429)
    assert requests.get(server + "/", timeout=10).status_code == 200


def test_concurrent_requests_over_http_equal_the_same_requests_alone(server):
    bodies = [
        {"input_data": {"data": ["a fox"], "parameters": {"num_inference_steps": 3}}},
        {"input_data": {"data": ["an owl"], "parameters": {"num_inference_steps": 9, "seed": 4}}},
    ]

    def images(body):
        response = requests.post(server + "/score", json=body, headers=AUTH, timeout=300)
        assert response.status_code == 200
        return [base64.b64decode(r["generated_image"]) for r in response.json()]

    alone = [images(body) for body in bodies]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        together = list(pool.map(images, bodies))
    assert together == alone


def test_client_backs_off_on_429_until_every_request_is_served(server):
    client = EndpointClient(server + "/score", key=KEY, retries=10, backoff_s=0.2)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda n: client.generate([f"a fox {n}"], num_inference_steps=2), range(6)))
    assert [len(r) for r in results] == [1] * 6
    with pytest.raises(EndpointError) as info:
        EndpointClient(server + "/score", key="nope", retries=3).generate(["a red fox"])
    assert info.value.status == 401 and info.value.attempts == 1


def test_listens_on_loopback_only_and_the_key_is_not_on_any_command_line(served):
    port = urlsplit(served.url).port
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                listening.append(local.rsplit(":", 1)[0])
    assert listening == ["0100007F"]  # 127.0.0.1, not 0.0.0.0 (issue 14)
    processes = _descendants(served.process.pid)
    assert len(processes) >= 3  # the gateway, gunicorn's arbiter and its worker
    for pid in processes:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            assert KEY.encode() not in cmdline.read()


# --- the managed-endpoint rehearsal: 424, 408, key file, SIGTERM -----------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway")
    (folder / "key").write_text(KEY + "\n")
    server = local_server(
        "deci-v1",
        stand_in="tiny",
        api_key_file=str(folder / "key"),
        rehearse_gateway=True,
        request_timeout_ms=2500,
        log_file=folder / "server.log",
    )
    server.start()
    yield server
    server.stop()


def test_key_file_is_enforced(gateway):
    assert requests.post(gateway.url + "/score", json=SAMPLE, timeout=60).status_code == 401


def test_rehearsed_gateway_answers_a_scoring_error_with_424_and_the_model_status(gateway):
    bad = {"input_data": {"data": ["a"], "parameters": {"num_inference_steps": 0}}}
    response = requests.post(gateway.url + "/score", json=bad, headers=AUTH, timeout=60)
    assert response.status_code == 424
    assert response.headers["ms-azureml-model-error-statuscode"] == "400"
    assert "between 1 and 150" in response.headers["ms-azureml-model-error-reason"]
    with pytest.raises(EndpointError, match="the model answered 400") as info:
        EndpointClient(gateway.url + "/score", key=KEY, retries=3).score(bad)
    assert info.value.status == 424 and info.value.attempts == 1  # an input error is never retried


def test_request_past_request_timeout_gets_408_and_the_worker_stops_it(gateway):
    heavy = {
        "input_data": {
            "data": ["a fox", "an owl", "a cat"],
            "parameters": {"num_inference_steps": 150, "height": 256, "width": 256},
        }
    }
    start = time.monotonic()
    response = requests.post(gateway.url + "/score", json=heavy, headers=AUTH, timeout=300)
    assert response.status_code == 408 and "request_timeout_ms=2500" in response.json()["error"]["message"]
    assert time.monotonic() - start < 60
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "POST /score 408" not in gateway.log_file.read_text():
        time.sleep(0.5)
    assert "POST /score 408" in gateway.log_file.read_text()  # the worker itself answered 408: generation stopped
    with pytest.raises(EndpointError, match="gave up after 2 attempts") as info:
        EndpointClient(gateway.url + "/score", key=KEY, retries=1, backoff_s=0.1).score(heavy)
    assert info.value.status == 408


def test_sigterm_stops_the_gateway_and_the_worker(gateway):
    """Issue 14: SIGTERM to ``nbhelpers serve`` left the inference server running and answering. Runs last."""
    processes = _descendants(gateway.process.pid)
    assert len(processes) >= 3
    os.kill(gateway.process.pid, signal.SIGTERM)
    assert gateway.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in processes):
        time.sleep(0.2)
    assert not [pid for pid in processes if _alive(pid)]
    with pytest.raises(requests.ConnectionError):
        requests.get(gateway.url + "/", timeout=5)
