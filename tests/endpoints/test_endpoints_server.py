"""``nbhelpers serve`` over real HTTP on loopback: the contract, Azure ML's status codes, and abuse (issue 14).

Two servers (tiny model): ``server`` answers as azmlinfsrv does (container codes passed through), ``gateway``
rehearses the managed endpoint (424 for scoring errors) with a short request timeout, and is stopped with SIGTERM
by the module's last test.
"""

import base64
import concurrent.futures
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests

from nbhelpers.endpoints import serving
from nbhelpers.endpoints.client import EndpointClient, EndpointError
from nbhelpers.endpoints.contract import decode_image
from nbhelpers.endpoints.serving import local_server, remove_stale_socket_folders, worker_command
from nbhelpers.endpoints.settings import EndpointSettings
from tests.endpoints.endpoint_cases import BAD_REQUESTS, HOSTILE_BODIES

pytestmark = pytest.mark.slow  # processes, servers or training runs: left out of make test-fast

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


# --- before anything starts: arguments, address, the worker's limits, stale socket folders ------------------------


def _refuse_to_start(*args, **kwargs):
    raise AssertionError("the scoring worker was started before the arguments were checked")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--port", "99999"], "--port must be between 0 and 65535 (0 picks a free port); got 99999."),
        (["--host", "256.1.1.1"], "--host 256.1.1.1 is not an IP address: pass 127.0.0.1"),
        (["--host", "192.0.2.1"], "--host 192.0.2.1 is not an address of this machine"),  # RFC 5737: nobody's
        (["--max_connections", "0"], "--max_connections must be a whole number at least 1; got 0."),
        (["--max_connections", "3"], "pass --max_connections 4 or more"),
        (["--header_timeout_s", "nan"], "--header_timeout_s must be a number of seconds, above 0"),
        (["--body_timeout_s", "-1"], "--body_timeout_s must be a number of seconds, above 0"),
        (
            ["--max_concurrent_requests_per_instance", "100000"],
            "between 1 and 16 generations at once on one instance (a whole number)",
        ),
    ],
    ids=["port", "host-not-ip", "host-not-here", "no-connections", "no-room-for-probe", "nan", "negative", "100000"],
)
def test_bad_serve_arguments_get_one_line_and_status_2_before_anything_starts(monkeypatch, capsys, argv, message):
    """``--port 99999`` and ``--host 256.1.1.1`` gave tracebacks after the worker had started; bad limits were
    taken (a concurrency of 100000 never became ready)."""
    monkeypatch.setattr(serving, "start_worker", _refuse_to_start)
    assert serving.main(["--model", "deci-v1", "--stand-in", "tiny", *argv]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and error.startswith("nbhelpers serve: error: ")


def test_a_port_in_use_or_a_bad_key_file_is_named_before_anything_starts(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(serving, "start_worker", _refuse_to_start)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serving.main(["--stand-in", "tiny", "--port", str(port)]) == 2
    assert f"port {port} is in use: pass another --port" in capsys.readouterr().err
    (tmp_path / "key").write_text("clé\n", encoding="utf-8")
    assert serving.main(["--stand-in", "tiny", "--api_key_file", str(tmp_path / "key")]) == 2
    assert "non-ASCII character at position 3" in capsys.readouterr().err


def test_the_command_line_exits_2_without_a_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "nbhelpers.endpoints.serving", "--stand-in", "tiny", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "nbhelpers serve: error: --port must be between 0 and 65535 (0 picks a free port); got 99999."
    ]
    assert "starting the scoring worker" not in done.stdout


def test_the_worker_header_limits_are_no_tighter_than_the_gateway():
    command = worker_command("/tmp/x.sock", EndpointSettings())
    option = {command[i]: command[i + 1] for i in range(len(command) - 1) if command[i].startswith("--limit")}
    assert option["--limit-request-line"] == "0"  # no limit (the gateway forwards POST /score only)
    assert int(option["--limit-request-field_size"]) >= 16 * 1024 + 2  # a field as long as the gateway's whole head
    assert int(option["--limit-request-fields"]) >= 16 * 1024 // 4


def test_socket_folders_of_killed_servers_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    """kill -9 of the gateway left its private socket folder behind for good."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f"nbhelpers-serve-{gone.pid}-abc123"
    live = tmp_path / f"nbhelpers-serve-{os.getpid()}-def456"
    other = tmp_path / "nbhelpers-serve-notapid"
    for folder in (stale, live, other):
        folder.mkdir()
        (folder / "worker.sock").write_text("")
    assert remove_stale_socket_folders(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    # serve() takes its folder through private_socket_folder, which cleans first and names the folder after itself.
    stale.mkdir()
    monkeypatch.setattr(serving.tempfile, "tempdir", str(tmp_path))
    with serving.private_socket_folder() as folder:
        assert not stale.exists() and folder.name.startswith(f"nbhelpers-serve-{os.getpid()}-")
        assert folder.stat().st_mode & 0o777 == 0o700
    assert not folder.exists()


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


@pytest.mark.parametrize(
    "headers",
    [
        {**AUTH, "Content-Type": "application/json; x=" + "a" * 9000},
        {"Authorization": "Bearer" + " " * 9000 + KEY},  # the gateway takes it (spaces around the key are allowed)
    ],
    ids=["long-content-type", "long-authorization"],
)
def test_a_long_header_the_gateway_accepts_gets_the_contract_answer_not_gunicorns_html(server, headers):
    """gunicorn's 8190-byte field limit answered heads the gateway had accepted with an HTML 400/431."""
    response = requests.post(server + "/score", data=b'{"input_data": {}}', headers=headers, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["field"] == "input_data.data"


def test_auth_and_size_are_decided_from_the_headers_before_the_body(server):
    """Issue 14: a 300 MB unauthenticated body was read whole before the 401."""
    head = "POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 314572800\r\n"
    start = time.monotonic()
    unauthenticated = _raw_exchange(server, (head + "\r\n").encode())  # no body is ever sent
    too_large = _raw_exchange(server, (head + f"Authorization: Bearer {KEY}\r\n\r\n").encode())
    chunked = _raw_exchange(
        server,
        f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n".encode(
            "ascii"
        ),
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
            head = f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 500\r\n\r\n"
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
    (folder / "key").write_text("\ufeff" + KEY + "\nsecond line: not part of the key\n", encoding="utf-8")
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


def _tcp_sockets_of(pid: int) -> int:
    """How many TCP sockets ``pid`` holds (its listening socket and the client connections it has accepted)."""
    tcp = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        tcp |= {line.split()[9] for line in Path(table).read_text().splitlines()[1:]}
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            count += link.startswith("socket:[") and link[8:-1] in tcp
    return count


def test_sigterm_drains_the_request_in_flight_then_stops_the_gateway_and_the_worker(gateway):
    """Issue 14: SIGTERM to ``nbhelpers serve`` left the inference server running and answering. Then it dropped
    the requests in flight: they are answered now. Runs last."""
    processes = _descendants(gateway.process.pid)
    assert len(processes) >= 3
    listening = _tcp_sockets_of(gateway.process.pid)
    body = {"input_data": {"data": ["a fox"], "parameters": {"num_inference_steps": 8}}}
    answers = []
    client = threading.Thread(
        target=lambda: answers.append(requests.post(gateway.url + "/score", json=body, headers=AUTH, timeout=120))
    )
    client.start()
    deadline = time.monotonic() + 60  # SIGTERM once the gateway has accepted the connection
    while _tcp_sockets_of(gateway.process.pid) <= listening and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(gateway.process.pid, signal.SIGTERM)
    client.join(timeout=120)
    assert answers, "the request in flight was dropped"
    # Finished (200, or 408 past request_timeout_ms), or, if SIGTERM came before its headers were read, 503.
    assert answers[0].status_code in (200, 408, 503) and answers[0].headers["Content-Type"] == "application/json"
    assert gateway.process.wait(timeout=60) == 0
    assert re.search(r"no new connections; \d+ request\(s\) in flight get up to 20 s", gateway.log_file.read_text())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in processes):
        time.sleep(0.2)
    assert not [pid for pid in processes if _alive(pid)]
    with pytest.raises(requests.ConnectionError):
        requests.get(gateway.url + "/", timeout=5)
