"""The gateway in process, in front of a fake worker (no model, no gunicorn): hostile HTTP, floods of idle
connections, Retry-After, draining on shutdown, and its limits' validation."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path

import h11
import pytest

from nbhelpers.endpoints.gateway import Gateway, GatewayLimits, PlaceTimes
from nbhelpers.endpoints.settings import EndpointSettings

KEY = "k-123"
SCORE_BODY = b'{"input_data": {"data": ["a fox"]}}'


class FakeWorker:
    """Plays gunicorn on a Unix socket: ``GET /`` answers "Healthy" once ``probe`` is set, ``POST /score`` answers
    ``[]`` once ``score`` is set. Keeps what it received."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.probe = asyncio.Event()
        self.probe.set()
        self.score = asyncio.Event()
        self.received: list[tuple[bytes, list[tuple[bytes, bytes]], bytes]] = []

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._answer, path=self.path)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        http = h11.Connection(h11.SERVER)
        request, body = None, b""
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        self.received.append((request.target, list(request.headers), body))
        await (self.probe if request.target == b"/" else self.score).wait()
        answer = b"Healthy" if request.target == b"/" else b"[]"
        headers = [("Content-Length", str(len(answer))), ("Content-Type", "application/json")]
        writer.write(http.send(h11.Response(status_code=200, headers=headers)) + http.send(h11.Data(data=answer)))
        writer.write(http.send(h11.EndOfMessage()))
        await writer.drain()
        writer.close()


def run_with_gateway(
    tmp_path: Path,
    scenario: Callable[[Gateway, FakeWorker, int], Awaitable[None]],
    *,
    settings: EndpointSettings | None = None,
    **gateway_options,
) -> None:
    async def main() -> None:
        worker = FakeWorker(tmp_path / "worker.sock")
        await worker.start()
        gateway = Gateway(
            worker.path, settings or EndpointSettings(model="deci-v1", stand_in="tiny"), **gateway_options
        )
        port = await gateway.start("127.0.0.1", 0)
        try:
            await scenario(gateway, worker, port)
        finally:
            worker.probe.set()
            worker.score.set()
            await gateway.close()
            worker.server.close()

    asyncio.run(asyncio.wait_for(main(), 60))


async def exchange(port: int, request: bytes, source: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` on a new connection; return the status, headers and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return parse_answer(answer)


def parse_answer(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split(" ")[1]), headers, body


def post(body: bytes = SCORE_BODY, extra: str = "") -> bytes:
    head = f"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


PROBE = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def wait_until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


# --- hostile HTTP ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length",
    [b"\xb2", b"1\xb9", "١٢".encode(), "１２".encode(), b"+12", b"0x10", b"12, 13", b"9" * 30],
    ids=["superscript-two", "one-superscript-one", "arabic-indic", "fullwidth", "plus", "hex", "list", "30-digits"],
)
def test_a_content_length_that_is_not_ascii_digits_gets_400(tmp_path, length):
    """``str.isdigit()`` took superscripts, which ``int()`` refuses: no answer and a traceback in the log."""

    async def scenario(gateway, worker, port):
        request = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n{}"
        status, headers, body = await exchange(port, request)
        assert status == 400 and headers["content-type"] == "application/json"
        assert "Content-Length" in json.loads(body)["error"]["message"]
        assert worker.received == []

    run_with_gateway(tmp_path, scenario)


@pytest.mark.parametrize(
    "request_bytes, status, message",
    [
        (post(extra="X-Injected: a\rSet-Cookie: b\r\n"), 400, "malformed"),
        (post(extra="X-Nul: a\x00b\r\n"), 400, "malformed"),
        (b"POST /score HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 400, "Host"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 5000 + b"\r\n", 431, "headers larger than 16384"),
        (post(extra="Authorization: Bearer a\r\nAuthorization: Bearer b\r\n"), 400, "authorization header is repeated"),
        (post(extra="X-Request-Id: " + "r" * 101 + "\r\n"), 431, "x-request-id is longer than 100"),
        (post(extra="Transfer-Encoding: chunked\r\n"), 411, "Content-Length"),
        (b"PUT / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "liveness"),
    ],
    ids=["bare-cr", "nul", "no-host", "5000-headers", "two-keys", "long-request-id", "chunked", "put"],
)
def test_malformed_or_hostile_heads_get_a_json_4xx_and_never_reach_the_worker(tmp_path, request_bytes, status, message):
    async def scenario(gateway, worker, port):
        answer_status, headers, body = await exchange(port, request_bytes)
        assert answer_status == status and headers["content-type"] == "application/json"
        assert message in json.loads(body)["error"]["message"]
        assert worker.received == []

    run_with_gateway(tmp_path, scenario)


def test_only_named_headers_reach_the_worker_and_a_pipelined_request_is_not_answered(tmp_path):
    async def scenario(gateway, worker, port):
        worker.score.set()
        extra = "X-Request-Id: r1\r\nCookie: secret\r\nX-Forwarded-For: 10.0.0.1\r\n"
        two_requests = post(extra=extra) + post()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(two_requests)
        answer = await asyncio.wait_for(reader.read(), 20)
        assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 200")
        ((target, headers, body),) = worker.received
        names = {name for name, _ in headers}
        assert target == b"/score" and body == SCORE_BODY
        assert names == {b"host", b"connection", b"content-length", b"x-request-id"}

    run_with_gateway(tmp_path, scenario)


def test_head_is_answered_with_the_get_headers_and_no_body(tmp_path):
    async def scenario(gateway, worker, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 20)
        status, headers, body = parse_answer(answer)
        assert (status, headers["content-length"], body) == (200, "7", b"")

    run_with_gateway(tmp_path, scenario)


def test_headers_trickled_byte_by_byte_get_408_at_the_header_timeout(tmp_path):
    """Slowloris: each byte arrives well within the timeout, the whole head does not."""

    async def scenario(gateway, worker, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = asyncio.ensure_future(reader.read())
        for byte in b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
            if answer.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.02)
        status, _, body = parse_answer(await asyncio.wait_for(answer, 20))
        assert status == 408 and "headers not received within 0.5 s" in json.loads(body)["error"]["message"]

    run_with_gateway(tmp_path, scenario, limits=GatewayLimits(header_timeout_s=0.5))


# --- floods of connections -----------------------------------------------------------------------------------------


def test_a_burst_of_idle_sockets_from_one_peer_locks_out_neither_the_probe_nor_other_clients(tmp_path):
    """A few dozen idle sockets used to hold every slot for header_timeout_s (renewable): the orchestrator's
    liveness probe got 503 and would have restarted a healthy instance."""

    async def scenario(gateway, worker, port):
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
        await wait_until(lambda: gateway.connections == 8)  # the limit holds
        status, _, body = await exchange(port, PROBE)
        assert (status, body) == (200, b"Healthy")
        worker.score.set()
        status, _, _ = await exchange(port, post())
        assert status == 200
        # The idle ones that gave way were told why.
        answer = await asyncio.wait_for(idle[0][0].read(), 20)
        assert answer.startswith(b"HTTP/1.1 408") and b"make room for other clients" in answer
        for _, writer in idle:
            writer.close()

    run_with_gateway(tmp_path, scenario, limits=GatewayLimits(max_connections=8, header_timeout_s=60))


def test_the_peer_holding_the_most_connections_gives_way_first(tmp_path):
    async def scenario(gateway, worker, port):
        other = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.3", 0))
        await wait_until(lambda: gateway.connections == 1)
        flood = [await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0)) for _ in range(30)]
        await wait_until(lambda: gateway.connections == 8)
        peers = sorted(c.peer for c in gateway._connections.open)
        assert peers == ["127.0.0.2"] * 7 + ["127.0.0.3"]
        reader, writer = other  # still open: its request is answered
        writer.write(PROBE)
        status, _, body = parse_answer(await asyncio.wait_for(reader.read(), 20))
        assert (status, body) == (200, b"Healthy")
        for _, flood_writer in flood:
            flood_writer.close()

    run_with_gateway(tmp_path, scenario, limits=GatewayLimits(max_connections=8, header_timeout_s=60))


def test_when_every_connection_is_being_answered_a_newcomer_gets_503_and_the_slots_come_back(tmp_path):
    async def scenario(gateway, worker, port):
        worker.probe.clear()
        scoring = [asyncio.ensure_future(exchange(port, post())) for _ in range(2)]  # both in-flight places
        probes = [asyncio.ensure_future(exchange(port, PROBE)) for _ in range(2)]  # share one worker probe
        await wait_until(lambda: gateway.answering == 4)
        status, headers, body = await exchange(port, PROBE)
        assert status == 503 and headers["retry-after"] == "1" and b"every connection is busy" in body
        assert sum(target == b"/" for target, _, _ in worker.received) == 1
        worker.probe.set()
        worker.score.set()
        assert [(await task)[0] for task in scoring + probes] == [200] * 4
        assert (await exchange(port, PROBE))[0] == 200

    run_with_gateway(tmp_path, scenario, limits=GatewayLimits(max_connections=4))


# --- Retry-After -------------------------------------------------------------------------------------------------


def test_place_times_expect_the_median_hold_time_minus_the_longest_hold_so_far():
    times = PlaceTimes(window=3)
    assert times.retry_after([5.0]) == 1  # nothing learnt yet
    for seconds in (100.0, 10.0, 12.0, 9.0):  # the 100 s one has left the window
        times.record(seconds)
    assert times.typical() == 10.0
    assert times.retry_after([2.5, 0.5]) == 8
    assert times.retry_after([11.0]) == 1  # overdue: any moment now
    assert times.retry_after([]) == 1


def test_retry_after_is_learnt_from_recent_hold_times_timeouts_included(tmp_path):
    """Retry-After was always 1 s while requests took 10 s; timed-out requests count with their full hold time."""
    now = [0.0]
    settings = EndpointSettings(model="deci-v1", stand_in="tiny", request_timeout_ms=200)

    async def scenario(gateway, worker, port):
        first = [await exchange(port, post()) for _ in range(2)]  # the worker does not answer: 408
        assert [status for status, _, _ in first] == [408, 408] and gateway.in_flight == 2
        now[0] = 30.0  # the worker stops them 30 s after they were admitted
        worker.score.set()
        await wait_until(lambda: gateway.in_flight == 0)
        assert gateway.place_times.typical() == 30.0
        worker.score.clear()
        second = [asyncio.ensure_future(exchange(port, post())) for _ in range(2)]
        await wait_until(lambda: gateway.in_flight == 2)
        now[0] = 40.0
        status, headers, body = await exchange(port, post())
        assert status == 429 and headers["retry-after"] == "20" and b"retry after 20 s" in body
        worker.score.set()
        await asyncio.gather(*second)

    run_with_gateway(tmp_path, scenario, settings=settings, clock=lambda: now[0])


# --- shutdown --------------------------------------------------------------------------------------------------


def test_drain_lets_requests_in_flight_finish_and_refuses_new_connections(tmp_path):
    async def scenario(gateway, worker, port):
        running = asyncio.ensure_future(exchange(port, post()))
        await wait_until(lambda: gateway.in_flight == 1)
        drain = asyncio.ensure_future(gateway.drain(30))
        await wait_until(lambda: gateway.draining)
        with pytest.raises(OSError):
            await exchange(port, PROBE)
        assert not drain.done()
        worker.score.set()
        assert (await running)[0] == 200
        assert await drain == 1

    run_with_gateway(tmp_path, scenario)


def test_drain_answers_503_to_requests_still_running_at_its_timeout(tmp_path):
    async def scenario(gateway, worker, port):
        idle_reader, _ = await asyncio.open_connection("127.0.0.1", port)
        running = asyncio.ensure_future(exchange(port, post()))
        await wait_until(lambda: gateway.in_flight == 1)
        await gateway.drain(0.2)
        status, headers, body = await running
        assert status == 503 and headers["retry-after"] == "5" and b"shutting down" in body
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # idle connections are closed

    run_with_gateway(tmp_path, scenario)


# --- limits --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_connections": 0}, "--max_connections must be a whole number at least 1; got 0."),
        ({"header_timeout_s": math.nan}, "--header_timeout_s must be a number of seconds, above 0"),
        ({"body_timeout_s": -1.0}, "--body_timeout_s must be a number of seconds, above 0"),
        ({"health_timeout_s": math.inf}, "--health_timeout_s must be"),
        ({"drain_timeout_s": -0.5}, "--drain_timeout_s must be a number of seconds, 0 or more"),
        ({"max_body_bytes": 2**40}, "--max_body_bytes must be a whole number between 1 and 268435456"),
    ],
)
def test_limits_out_of_range_are_refused_with_the_flag_to_change(options, message):
    with pytest.raises(ValueError) as info:
        GatewayLimits(**options)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_limits_must_leave_a_connection_for_the_probe():
    settings = EndpointSettings(max_concurrent_requests_per_instance=4)  # 8 in flight
    with pytest.raises(ValueError, match="pass --max_connections 10 or more"):
        GatewayLimits(max_connections=9).check_room_for(settings)
    GatewayLimits(max_connections=10).check_room_for(settings)
    with pytest.raises(ValueError, match="ulimit -n"):
        GatewayLimits(max_connections=10**7).check_room_for(settings)
