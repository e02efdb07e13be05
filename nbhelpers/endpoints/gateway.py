"""The front of ``nbhelpers serve``: a small asyncio HTTP gateway that answers like Azure ML's managed endpoint.

Why a gateway of our own in front of Microsoft's server: ``azmlinfsrv`` (Flask under gunicorn's threaded worker)
reads a whole request body before the scoring script sees its headers, has no read timeout for a client that
stops sending, gives each connection one of its few threads, and has no admission control. On Azure the
managed endpoint's gateway does these jobs in front of the same container; this module rehearses that gateway
on loopback. HTTP is parsed and written by h11 (https://h11.readthedocs.io), on both sides: the clients'
requests and the worker's answers. h11 refuses what hand parsing let through (a ``Content-Length`` of non-ASCII
digits, conflicting lengths, control characters or line breaks in a header, a missing ``Host``) with a 400.

- one coroutine per connection (cheap), so slow or stalled clients hold no worker thread: headers must arrive
  within ``header_timeout_s`` and the body within ``body_timeout_s`` of the headers, or the answer is 408;
- at most ``max_connections`` connections are open. When one more arrives, a connection that is still waiting
  for its request gives way (408): the longest-waiting one of the peer that holds the most connections. So a
  burst of idle sockets, even renewed, locks nobody out, the liveness probe included; a peer cannot push out
  another peer's connections while it holds more of them. Only when every connection is being answered is the
  newcomer refused (503 with ``Retry-After``); :meth:`GatewayLimits.check_room_for` keeps that from happening
  to the probe;
- auth (``Authorization: Bearer <key>``, 401) and the size limit (``Content-Length`` required, 411; at most
  ``max_body_bytes``, 413) are decided from the headers, before one byte of the body is read;
- at most ``2 x max_concurrent_requests_per_instance`` requests are in flight (Azure ML's documented rule); the
  rest get 429 with a ``Retry-After`` learnt from how long recent requests held their place, timeouts included
  (:class:`PlaceTimes`);
- a request running past ``request_timeout_ms`` gets 408; the scoring service stops its generation at the next
  step, and the request keeps its in-flight place until it has;
- with ``rehearse_gateway``, a non-200 answer of the scoring container becomes 424 with the container's code and
  reason in ``ms-azureml-model-error-statuscode`` / ``ms-azureml-model-error-reason``, as the managed service
  does; without it the container's own answer (400, 413, 422, ...) is passed through, as ``azmlinfsrv`` gives it;
- a worker that died mid-request gives 502; ``GET /`` (and ``HEAD /``, without a body) answers 200 only when
  the worker answers its liveness probe; probes that arrive together share one call to the worker;
- :meth:`Gateway.drain` (``nbhelpers serve`` on SIGTERM) stops listening, lets the requests in flight finish
  for up to ``drain_timeout_s`` and answers 503 to those still running; requests that arrive meanwhile on open
  connections get 503 too.

Codes: https://learn.microsoft.com/azure/machine-learning/how-to-troubleshoot-online-endpoints (HTTP status codes).
The worker behind listens on a Unix socket in a private folder, so nothing else can reach it. One request per
connection (``Connection: close``): a pipelined second request is not answered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import h11

from nbhelpers.endpoints.scoring_service import key_matches
from nbhelpers.endpoints.settings import EndpointSettings
from nbhelpers.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Headers of the worker's answer that reach the client.
RELAYED_HEADERS = ("content-type", "retry-after", "www-authenticate", "x-request-id", "x-ms-run-fn-exec-ms")
#: Headers of the client's request that reach the worker (each at most once).
FORWARDED_HEADERS = ("authorization", "content-type", "x-request-id")
#: azmlinfsrv answers a longer ``x-request-id`` with its own 431 (``HEADER_LIMIT`` in its routes.py).
MAX_REQUEST_ID_CHARS = 100
#: Longest wait any limit may set, in seconds (one hour).
MAX_WAIT_S = 3600.0
#: Largest body limit: the gateway holds a body in memory before the worker gets it.
MAX_BODY_LIMIT = 256 * 2**20
#: Largest answer accepted from the worker (four 1024 px PNGs in base64 are about 10 MB).
MAX_WORKER_ANSWER_BYTES = 256 * 2**20
#: File descriptors kept free for the worker connections, the listening socket and the process itself.
RESERVED_DESCRIPTORS = 64


@dataclass
class GatewayLimits:
    """Protections of the gateway against slow, large or too many requests (``nbhelpers serve`` flags).

    Raises:
        ConfigurationError: a limit out of range, naming the flag and what to pass.
    """

    header_timeout_s: float = field(default=10.0, metadata={"help": "Seconds a client has to send the headers."})
    body_timeout_s: float = field(default=30.0, metadata={"help": "Seconds a client has to send the whole body."})
    max_body_bytes: int = field(default=2**20, metadata={"help": "Largest request body; larger gets 413."})
    max_connections: int = field(
        default=64,
        metadata={
            "help": "Open connections at once. When full, the longest-idle connection of the busiest peer gives "
            "way; only if every connection is being answered does a new one get 503."
        },
    )
    health_timeout_s: float = field(default=2.0, metadata={"help": "Seconds the worker has to answer GET /."})
    drain_timeout_s: float = field(
        default=20.0,
        metadata={
            "help": "On SIGTERM, seconds the requests in flight have to finish before they get 503 (0: at once)."
        },
    )

    #: Largest request line plus headers; more gets 431. The worker's own limits are set above it.
    max_header_bytes = 16 * 1024

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "health_timeout_s", "drain_timeout_s"):
            value = getattr(self, name)
            zero_allowed = name == "drain_timeout_s"  # 0: answer 503 at once
            finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not finite or not 0 <= value <= MAX_WAIT_S or (value == 0 and not zero_allowed):
                above = "0 or more" if zero_allowed else "above 0"
                raise ConfigurationError(
                    f"--{name} must be a number of seconds, {above} and at most {MAX_WAIT_S:g}; got {value}."
                )
        for name, highest in (("max_body_bytes", MAX_BODY_LIMIT), ("max_connections", None)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (highest and value > highest):
                bound = f"between 1 and {highest}" if highest else "at least 1"
                raise ConfigurationError(f"--{name} must be a whole number {bound}; got {value}.")

    def check_room_for(self, settings: EndpointSettings) -> None:
        """Refuse limits that leave no connection for the liveness probe, or more than the process can open.

        Every admitted request holds a connection until it is answered, so ``max_connections`` must exceed the
        requests in flight (``2 x max_concurrent_requests_per_instance``) by two: one for the liveness probe,
        one for any other client (which then gets 429 rather than 503). Each connection is a file descriptor.

        Raises:
            ConfigurationError: naming the flag and the value to pass.
        """
        needed = settings.max_in_flight + 2
        if self.max_connections < needed:
            raise ConfigurationError(
                f"--max_connections {self.max_connections} leaves no room for the liveness probe: it must be at "
                f"least 2 x max_concurrent_requests_per_instance + 2 = {needed}; pass --max_connections {needed} "
                "or more."
            )
        try:
            import resource  # Unix only, as is the gunicorn worker
        except ImportError:
            return
        soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        most = soft_limit - RESERVED_DESCRIPTORS - settings.max_in_flight
        if soft_limit != resource.RLIM_INFINITY and self.max_connections > most:
            raise ConfigurationError(
                f"--max_connections {self.max_connections} is more than this process can open (its file limit, "
                f"`ulimit -n`, is {soft_limit}); pass --max_connections {max(most, needed)} or raise `ulimit -n`."
            )


class PlaceTimes:
    """How long admitted requests hold their place in flight, learnt from the most recent ones.

    ``Retry-After`` on a 429 is when the first place is expected to free: the median hold time of the last
    ``window`` requests that generated (answered 200, or timed out: a timed-out request holds its place until
    the worker has stopped it), minus how long the longest-held place has been held; at least 1 s. Before any
    request has finished it is 1 s.
    """

    def __init__(self, window: int = 16) -> None:
        self._recent: collections.deque[float] = collections.deque(maxlen=window)

    def record(self, seconds: float) -> None:
        """One request's hold time, in seconds."""
        self._recent.append(max(0.0, seconds))

    def typical(self) -> float | None:
        """The median recent hold time (``None`` before the first)."""
        return statistics.median(self._recent) if self._recent else None

    def retry_after(self, held_s: list[float]) -> int:
        """Whole seconds until a place should free, given how long each place now held has been held."""
        typical = self.typical()
        if typical is None or not held_s:
            return 1
        return max(1, math.ceil(typical - max(held_s)))


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class _Reject(Exception):
    """An answer decided before the request reaches the worker."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.answer = _Answer(status, _error_body(status, message), headers or {})


def _error_body(status: int, message: str, where: str = "request") -> bytes:
    return json.dumps({"error": {"status": status, "field": where, "message": message}}).encode()


def _header_safe(text: str, limit: int = 200) -> str:
    """``text`` as a one-line printable-ASCII header value."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:limit]


def _reason(status: int) -> bytes:
    return HTTPStatus(status).phrase.encode() if status in HTTPStatus._value2member_map_ else b""


@dataclass(eq=False)
class _Connection:
    """One client connection: its HTTP state and how far its request has come.

    ``state`` is ``"waiting"`` (for the request: headers or body), ``"answering"`` (admitted: the gateway is
    working on the answer or sending it) or ``"closing"`` (answered; what the client still sends is discarded).
    """

    peer: str
    writer: asyncio.StreamWriter
    opened: float
    http: h11.Connection = field(
        default_factory=lambda: h11.Connection(h11.SERVER, max_incomplete_event_size=GatewayLimits.max_header_bytes)
    )
    state: str = "waiting"
    head_only: bool = False
    evicted: bool = False

    def give_way(self) -> None:
        """Close this connection to make room; a client still sending its request is told why (408)."""
        self.evicted = True
        if self.state == "waiting":
            message = "closed to make room for other clients: send the request promptly after connecting."
            with contextlib.suppress(h11.LocalProtocolError):
                self.writer.write(_serialise(self.http, _Answer(408, _error_body(408, message)), head_only=False))
            self.writer.transport.close()
        else:
            self.writer.transport.abort()


class _Connections:
    """The open connections, and which one gives way when there are too many (see the module docstring)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: set[_Connection] = set()

    def __len__(self) -> int:
        return len(self.open)

    def admit(self, newcomer: _Connection) -> bool:
        """Count ``newcomer``; if that makes too many, close another. False when none may be closed."""
        self.open.add(newcomer)
        if len(self.open) <= self.limit:
            return True
        idle = [c for c in self.open if c is not newcomer and c.state != "answering"]
        if not idle:
            return False
        closing = [c for c in idle if c.state == "closing"]
        if closing:
            victim = min(closing, key=lambda c: c.opened)
        else:
            per_peer = collections.Counter(c.peer for c in self.open)
            victim = min(idle, key=lambda c: (-per_peer[c.peer], c.opened))
        self.open.discard(victim)
        victim.give_way()
        return True

    def discard(self, connection: _Connection) -> None:
        self.open.discard(connection)

    def answering(self) -> int:
        return sum(c.state == "answering" for c in self.open)


def _serialise(http: h11.Connection, answer: _Answer, head_only: bool) -> bytes:
    headers = {"Content-Type": "application/json", **answer.headers}
    headers |= {"Content-Length": str(len(answer.body)), "Connection": "close"}
    data = http.send(
        h11.Response(status_code=answer.status, headers=list(headers.items()), reason=_reason(answer.status))
    )
    if answer.body and not head_only:  # a HEAD answer has the GET answer's headers and no body
        data += http.send(h11.Data(data=answer.body))
    return data + http.send(h11.EndOfMessage())


class Gateway:
    """The HTTP front for one scoring worker listening on the Unix socket ``worker_socket``.

    Args:
        worker_socket: path of the worker's Unix socket (gunicorn ``--bind unix:PATH``).
        settings: ``request_timeout_ms`` and ``max_concurrent_requests_per_instance`` (Azure's request settings).
        api_key: the key clients must send (``None``: no auth).
        rehearse_gateway: answer a failed scoring request with 424 as the managed service does.
        limits: timeouts and size limits.
        clock: seconds, for the hold times behind ``Retry-After`` (tests pass a fake one).
    """

    def __init__(
        self,
        worker_socket: str,
        settings: EndpointSettings,
        *,
        api_key: str | None = None,
        rehearse_gateway: bool = False,
        limits: GatewayLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.worker_socket = worker_socket
        self.settings = settings
        self.api_key = api_key
        self.rehearse_gateway = rehearse_gateway
        self.limits = limits or GatewayLimits()
        self.clock = clock
        self.place_times = PlaceTimes()
        self.draining = False
        self._connections = _Connections(self.limits.max_connections)
        self._held: dict[asyncio.Future[Any], float] = {}  # worker call -> when it took its place
        self._timed_out: set[asyncio.Future[Any]] = set()
        self._give_up = asyncio.Event()
        self._probe: asyncio.Future[int] | None = None
        self._server: asyncio.base_events.Server | None = None

    @property
    def in_flight(self) -> int:
        """Requests holding a place (admitted, the worker not done with them)."""
        return len(self._held)

    @property
    def answering(self) -> int:
        """Requests being answered (admitted: the gateway is waiting for the worker or sending the answer)."""
        return self._connections.answering()

    @property
    def connections(self) -> int:
        """Open client connections."""
        return len(self._connections)

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, sock: Any = None) -> int:
        """Listen on ``host:port`` (``port`` 0 picks a free one), or on the bound socket ``sock``; return the port."""
        if sock is not None:
            self._server = await asyncio.start_server(self._connection, sock=sock)
        else:
            self._server = await asyncio.start_server(self._connection, host, port)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close every connection at once (see :meth:`drain` for a graceful stop)."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections.open):
            connection.writer.transport.abort()

    async def drain(self, timeout_s: float) -> int:
        """Stop listening; give the requests being answered up to ``timeout_s`` to finish, then answer 503 to the
        rest and close. Returns how many were still being answered when the drain began.

        A second call (a second Ctrl-C) ends the wait at once.
        """
        if self.draining:
            self._give_up.set()
            return self.answering
        self.draining = True
        if self._server is not None:
            self._server.close()
        busy = self.answering
        deadline = time.monotonic() + timeout_s
        while self.answering and time.monotonic() < deadline and not self._give_up.is_set():
            await asyncio.sleep(0.05)
        self._give_up.set()
        # The 503s still have to be written; a client that does not read them is not waited for long.
        deadline = time.monotonic() + 2.0
        while self.answering and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.close()
        return busy

    # --- one connection -------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        connection = _Connection(
            peer=str(peer[0] if isinstance(peer, tuple) else peer), writer=writer, opened=time.monotonic()
        )
        try:
            if self._connections.admit(connection):
                answer = await self._answer(connection, reader)
            else:
                message = "every connection is busy answering a request; retry later."
                answer = _Answer(503, _error_body(503, message), {"Retry-After": "1"})
            if not connection.evicted:
                connection.state = "answering"  # an answer being written is never cut by an eviction
                await self._send(connection, answer)
                connection.state = "closing"
                await self._linger(connection, reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        finally:
            self._connections.discard(connection)
            writer.transport.abort()

    async def _send(self, connection: _Connection, answer: _Answer) -> None:
        connection.writer.write(_serialise(connection.http, answer, connection.head_only))
        with contextlib.suppress(TimeoutError):  # a client that does not read its answer is dropped
            await asyncio.wait_for(connection.writer.drain(), self.limits.body_timeout_s)

    async def _linger(self, connection: _Connection, reader: asyncio.StreamReader, seconds: float = 2.0) -> None:
        """Half-close, then discard what the client still sends for up to ``seconds``.

        A client refused before its body was read (401, 413) is still sending it; closing at once would reset
        the connection and the kernel would drop the answer before the client reads it (nginx calls this
        "lingering close"). Nothing read here is kept; a lingering connection is the first to give way.
        """
        if connection.writer.can_write_eof():
            connection.writer.write_eof()
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while (remaining := deadline - time.monotonic()) > 0:
                if not await asyncio.wait_for(reader.read(2**16), remaining):
                    break

    async def _answer(self, connection: _Connection, reader: asyncio.StreamReader) -> _Answer:
        try:
            method, path, headers = await self._read_head(connection, reader)
            if self.draining:
                raise _Reject(503, "the endpoint is shutting down; retry in a few seconds.", {"Retry-After": "5"})
            if path == "/":
                if method not in ("GET", "HEAD"):
                    raise _Reject(405, "GET / is the liveness probe; POST /score scores.", {"Allow": "GET, HEAD"})
                connection.state = "answering"
                return await self._liveness()
            if path != "/score":
                raise _Reject(404, f"no route {path[:100]}; the endpoint answers GET / and POST /score.")
            if method != "POST":
                raise _Reject(405, "use POST /score with the JSON request.", {"Allow": "POST"})
            body = await self._read_body(connection, reader, self._admit_headers(headers))
            connection.state = "answering"
            # Admission after the body: a slow upload holds a connection (cheap, bounded), never a scoring place.
            if self.in_flight >= self.settings.max_in_flight:
                now = self.clock()
                retry_after = str(self.place_times.retry_after([now - start for start in self._held.values()]))
                raise _Reject(
                    429,
                    f"too many requests in flight (at most 2 x max_concurrent_requests_per_instance"
                    f" = {self.settings.max_in_flight}); retry after {retry_after} s.",
                    {"Retry-After": retry_after},
                )
            return await self._score(headers, body)
        except _Reject as reject:
            return reject.answer
        except (ConnectionError, asyncio.IncompleteReadError):
            raise
        except Exception:  # a bug must still get an answer, not a silent close
            logger.exception("nbhelpers gateway: unexpected error")
            return _Answer(500, _error_body(500, "internal error of the gateway; see the server log."))

    async def _read_head(
        self, connection: _Connection, reader: asyncio.StreamReader
    ) -> tuple[str, str, dict[str, str]]:
        """The request line and headers within ``header_timeout_s``, at most ``max_header_bytes`` of them."""
        limit = self.limits.max_header_bytes
        deadline = time.monotonic() + self.limits.header_timeout_s
        received = 0
        while True:
            try:
                event = connection.http.next_event()
            except h11.RemoteProtocolError as err:
                if err.error_status_hint == 431:
                    raise _Reject(431, f"headers larger than {limit} bytes.") from None
                raise _Reject(400, f"malformed HTTP request: {_header_safe(str(err))}.") from None
            if isinstance(event, h11.Request):
                break
            if event is not h11.NEED_DATA:  # ConnectionClosed: the client left before sending a request
                raise ConnectionResetError
            if received >= limit:
                raise _Reject(431, f"headers larger than {limit} bytes.")
            try:
                # Never more than the header limit before the request is known, so a head cannot grow past it.
                data = await asyncio.wait_for(reader.read(min(2**16, limit - received)), deadline - time.monotonic())
            except TimeoutError:
                raise _Reject(408, f"headers not received within {self.limits.header_timeout_s:g} s.") from None
            received += len(data)
            connection.http.receive_data(data)
        method = event.method.decode("ascii")
        connection.head_only = method == "HEAD"
        headers: dict[str, str] = {}
        for raw_name, raw_value in event.headers:  # h11 gives names in lower case
            name, value = raw_name.decode("ascii"), raw_value.decode("latin-1")
            if name in headers and name in (*FORWARDED_HEADERS, "transfer-encoding"):
                raise _Reject(400, f"the {name} header is repeated.")
            headers[name] = value
        return method, event.target.decode("ascii").split("?")[0], headers

    def _admit_headers(self, headers: dict[str, str]) -> int:
        """Auth and size, from the headers alone; returns the body length."""
        if not key_matches(self.api_key, headers):
            raise _Reject(
                401, "missing or wrong key: send 'Authorization: Bearer <key>'.", {"WWW-Authenticate": "Bearer"}
            )
        if "transfer-encoding" in headers or "content-length" not in headers:
            raise _Reject(411, "send the body with a Content-Length header (chunked bodies are not accepted).")
        if len(headers.get("x-request-id", "")) > MAX_REQUEST_ID_CHARS:
            raise _Reject(431, f"x-request-id is longer than {MAX_REQUEST_ID_CHARS} characters.")
        length = int(headers["content-length"])  # h11 has checked it: ASCII digits only, at most 20 of them
        if length > self.limits.max_body_bytes:
            raise _Reject(413, f"body of {length} bytes; at most {self.limits.max_body_bytes}.")
        return length

    async def _read_body(self, connection: _Connection, reader: asyncio.StreamReader, length: int) -> bytes:
        if connection.http.they_are_waiting_for_100_continue:  # curl waits for this before sending large bodies
            connection.writer.write(connection.http.send(h11.InformationalResponse(status_code=100, headers=[])))
        deadline = time.monotonic() + self.limits.body_timeout_s
        chunks: list[bytes] = []
        while True:
            try:
                event = connection.http.next_event()
            except h11.RemoteProtocolError as err:
                raise _Reject(400, f"malformed body: {_header_safe(str(err))}.") from None
            if isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            if isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
                continue
            try:
                data = await asyncio.wait_for(reader.read(min(2**16, length + 1)), deadline - time.monotonic())
            except TimeoutError:
                raise _Reject(408, f"body not received within {self.limits.body_timeout_s:g} s.") from None
            connection.http.receive_data(data)

    async def _score(self, headers: dict[str, str], body: bytes) -> _Answer:
        timeout_s = self.settings.request_timeout_ms / 1000
        forwarded = [(k, v) for k, v in headers.items() if k in FORWARDED_HEADERS]
        # The request holds its in-flight place until the worker has answered, not until the client has: after a
        # 408 the service still needs up to one denoising step to stop. A worker silent for twice the timeout
        # is given up on, so a wedged worker cannot hold places for ever.
        call = asyncio.ensure_future(
            asyncio.wait_for(self._worker_request("POST", "/score", forwarded, body), 2 * timeout_s + 5)
        )
        self._held[call] = self.clock()
        call.add_done_callback(self._release)
        give_up = asyncio.ensure_future(self._give_up.wait())
        try:
            done, _ = await asyncio.wait({call, give_up}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            give_up.cancel()
        if call not in done:
            if give_up in done:
                message = "the endpoint is shutting down and the request did not finish in time; retry."
                return _Answer(503, _error_body(503, message), {"Retry-After": "5"})
            self._timed_out.add(call)
            message = (
                f"the request ran past request_timeout_ms={self.settings.request_timeout_ms}; its generation"
                " is being stopped."
            )
            return _Answer(408, _error_body(408, message))
        try:
            status, reason, worker_headers, answer = call.result()
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError, h11.ProtocolError) as err:
            message = (
                f"the scoring worker failed or restarted mid-request ({type(err).__name__}). Retry in a few seconds."
            )
            return _Answer(502, _error_body(502, message), {"Retry-After": "5"})
        relayed = {k.title(): v for k, v in worker_headers.items() if k in RELAYED_HEADERS}
        if status == 200 or not self.rehearse_gateway:
            return _Answer(status, answer, relayed)
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            reason = json.loads(answer)["error"]["message"]
        relayed |= {
            "ms-azureml-model-error-statuscode": str(status),
            "ms-azureml-model-error-reason": _header_safe(str(reason)),
        }
        return _Answer(424, answer, relayed)

    def _release(self, call: asyncio.Future[Any]) -> None:
        """The worker is done with a request: free its place, and learn its hold time if it generated."""
        held_s = self.clock() - self._held.pop(call)
        timed_out = call in self._timed_out
        self._timed_out.discard(call)
        status = None
        if not call.cancelled() and call.exception() is None:  # retrieved here: after a 408 nobody else looks
            status = call.result()[0]
        if timed_out or status in (200, 408):
            self.place_times.record(held_s)

    async def _liveness(self) -> _Answer:
        if self._probe is None or self._probe.done():  # probes that arrive together share one worker call
            self._probe = asyncio.ensure_future(self._probe_worker())
        if await asyncio.shield(self._probe) == 200:
            return _Answer(200, b"Healthy", {"Content-Type": "text/plain"})
        message = "the scoring worker is starting (loading the model) or restarting."
        return _Answer(503, _error_body(503, message), {"Retry-After": "5"})

    async def _probe_worker(self) -> int:
        try:
            status, _, _, _ = await asyncio.wait_for(
                self._worker_request("GET", "/", [], b""), self.limits.health_timeout_s
            )
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, h11.ProtocolError):
            return 503
        return status

    async def _worker_request(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, dict[str, str], bytes]:
        """One HTTP/1.1 exchange with the worker; returns ``(status, reason, headers, body)``."""
        reader, writer = await asyncio.open_unix_connection(self.worker_socket, limit=2**16)
        http = h11.Connection(h11.CLIENT)
        try:
            head = [("Host", "localhost"), ("Connection", "close"), ("Content-Length", str(len(body))), *headers]
            data = http.send(h11.Request(method=method, target=path, headers=head))
            if body:
                data += http.send(h11.Data(data=body))
            writer.write(data + http.send(h11.EndOfMessage()))
            await writer.drain()
            response: h11.Response | None = None
            chunks: list[bytes] = []
            size = 0
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    http.receive_data(await reader.read(2**16))  # b"" at the end: the worker closes after its answer
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > MAX_WORKER_ANSWER_BYTES:
                        raise ValueError(f"the worker's answer is larger than {MAX_WORKER_ANSWER_BYTES} bytes")
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
        finally:
            writer.close()
        assert response is not None  # h11 gives the Response before any Data or EndOfMessage
        parsed = {name.decode("ascii"): value.decode("latin-1") for name, value in response.headers}
        return response.status_code, response.reason.decode("latin-1"), parsed, b"".join(chunks)
