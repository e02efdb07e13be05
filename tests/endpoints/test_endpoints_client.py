"""EndpointClient against a scripted loopback server: retries (urllib3 Retry), Retry-After, and clear errors."""

import http.server
import json
import socket
import threading
import time
from types import SimpleNamespace

import pytest

from nbhelpers.endpoints.client import EndpointClient, EndpointError, request_body

OK_ROWS = [{"prompt": "p", "generated_image": "", "nsfw_content_detected": None}]


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers POSTs with the next ``(status, headers, body, delay_s)`` of ``server.script``; counts requests."""

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(dict(self.headers))
        status, headers, body, delay_s = self.server.script[min(len(self.server.requests), len(self.server.script)) - 1]
        if delay_s:
            time.sleep(delay_s)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture()
def scripted():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    server.requests, server.script = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server):
    return f"http://127.0.0.1:{server.server_address[1]}/score"


def _record_waits(monkeypatch) -> list[float]:
    """The waits urllib3's Retry asks for, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr("urllib3.util.retry.time", SimpleNamespace(sleep=waits.append, time=time.time))
    return waits


def test_retries_408_429_503_with_backoff_honouring_retry_after(scripted, monkeypatch):
    sleeps = _record_waits(monkeypatch)
    scripted.script = [
        (503, {"Retry-After": "3"}, {"error": "busy"}, 0),
        (429, {}, {"error": "slow down"}, 0),
        (408, {}, {"error": "timeout"}, 0),
        (200, {"Content-Type": "application/json"}, OK_ROWS, 0),
    ]
    client = EndpointClient(_url(scripted), key="k", retries=4, backoff_s=0.5)
    assert client.score(request_body(["p"])) == OK_ROWS
    assert len(scripted.requests) == 4 and scripted.requests[0]["Authorization"] == "Bearer k"
    assert sleeps == [3, 1.0, 2.0]  # Retry-After, then urllib3's backoff: 0.5 s x 2, x 4


def test_gives_up_and_says_why(scripted, monkeypatch):
    _record_waits(monkeypatch)
    scripted.script = [(503, {"Retry-After": "1"}, {"error": "busy"}, 0)]
    with pytest.raises(EndpointError, match=r"gave up after 3 attempts \(answers: 503, 503, 503\)") as info:
        EndpointClient(_url(scripted), retries=2).score(request_body(["p"]))
    assert info.value.status == 503 and info.value.attempts == 3 and len(scripted.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 413, 422, 424])
def test_input_errors_are_never_retried(scripted, status):
    scripted.script = [(status, {}, {"error": {"message": "fix me"}}, 0)]
    with pytest.raises(EndpointError, match="not retried") as info:
        EndpointClient(_url(scripted), retries=4, backoff_s=0).score(request_body(["p"]))
    assert info.value.status == status and len(scripted.requests) == 1


def test_a_non_json_200_is_a_clear_error(scripted):
    """Issue 14: a raw JSONDecodeError came out of the client."""
    scripted.script = [(200, {"Content-Type": "text/html"}, b"<html>login page</html>", 0)]
    with pytest.raises(EndpointError, match="answered 200 but not with JSON.*text/html.*scoring URL"):
        EndpointClient(_url(scripted)).score(request_body(["p"]))
    scripted.script = [(200, {}, {"rows": []}, 0)]
    with pytest.raises(EndpointError, match="not the contract's list"):
        EndpointClient(_url(scripted)).score(request_body(["p"]))


def test_a_read_timeout_is_not_posted_again(scripted):
    """Issue 14: a read timeout re-POSTed while the server kept generating the abandoned request."""
    scripted.script = [(200, {}, OK_ROWS, 2.0)]
    with pytest.raises(EndpointError, match="no answer within timeout_s=0.5 s; not retried"):
        EndpointClient(_url(scripted), retries=4, timeout_s=0.5).score(request_body(["p"]))
    time.sleep(2.0)
    assert len(scripted.requests) == 1


def test_connection_errors_are_retried_then_explained(monkeypatch):
    sleeps = _record_waits(monkeypatch)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(EndpointError, match="could not reach .* after 3 attempt") as info:
        EndpointClient(f"http://127.0.0.1:{port}/score", retries=2, backoff_s=0.1).score(request_body(["p"]))
    assert info.value.status is None and sleeps == [0.2]  # the first retry follows at once


def _statuses(timing):
    return [attempt.status for attempt in timing.attempts]


def _in_order(timing):
    times = [t for attempt in timing.attempts for t in (attempt.start_s, attempt.end_s)]
    return times == sorted(times)


def test_timings_keep_every_attempt_its_status_and_the_wait_between(scripted):
    scripted.script = [
        (429, {}, {"error": "busy"}, 0),
        (503, {}, {"error": "busy"}, 0),
        (200, {"Content-Type": "application/json"}, OK_ROWS, 0),
    ]
    client = EndpointClient(_url(scripted), retries=4, backoff_s=0.05, record_timings=True)
    client.score(request_body(["p"]))
    (timing,) = client.timings
    assert _statuses(timing) == [429, 503, 200] and timing.status == 200 and timing.retries == 2
    assert _in_order(timing)
    first, second, third = timing.attempts
    assert third.start_s - second.end_s >= 0.1  # urllib3's second backoff: 2 x 0.05 s, slept between the attempts
    assert EndpointClient(_url(scripted)).timings == []  # off by default


def test_timings_of_failed_requests_are_kept_too(scripted, monkeypatch):
    _record_waits(monkeypatch)
    scripted.script = [(503, {}, {"error": "busy"}, 0)]
    client = EndpointClient(_url(scripted), retries=2, record_timings=True)
    with pytest.raises(EndpointError):
        client.score(request_body(["p"]))
    assert [_statuses(t) for t in client.timings] == [[503, 503, 503]]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = EndpointClient(f"http://127.0.0.1:{port}/score", retries=1, record_timings=True)
    with pytest.raises(EndpointError):
        unreachable.score(request_body(["p"]))
    assert [_statuses(t) for t in unreachable.timings] == [[None, None]]


def test_timings_of_concurrent_requests_stay_apart(scripted):
    """urllib3 retries inside the calling thread: each thread's attempts go to its own request, also when another
    request starts and ends while one waits to retry."""
    scripted.script = [
        (429, {"Retry-After": "1"}, {"error": "busy"}, 0),  # the first to arrive waits 1 s, then retries
        (200, {"Content-Type": "application/json"}, OK_ROWS, 0),
        (200, {"Content-Type": "application/json"}, OK_ROWS, 0),
    ]
    client = EndpointClient(_url(scripted), retries=2, backoff_s=0, record_timings=True)
    threads = [threading.Thread(target=client.score, args=(request_body(["p"]),)) for _ in range(2)]
    threads[0].start()
    time.sleep(0.2)  # the second request comes and goes while the first waits
    threads[1].start()
    for thread in threads:
        thread.join()
    assert sorted(_statuses(t) for t in client.timings) == [[200], [429, 200]]
    assert all(_in_order(t) for t in client.timings)
