"""The front of ``nbhelpers serve``: a small asyncio HTTP gateway that answers like Azure ML's managed endpoint.

Why a gateway of our own in front of Microsoft's server: ``azmlinfsrv`` (Flask under gunicorn's threaded worker)
reads a whole request body before the scoring script sees its headers, has no read timeout for a client that
stops sending, gives each connection one of its few threads, and has no admission control. On Azure the
managed endpoint's gateway does these jobs in front of the same container; this module rehearses that gateway
on loopback, with the standard library only:

- requests are parsed here, one coroutine per connection (cheap), so slow or stalled clients hold no worker
  thread: headers must arrive within ``header_timeout_s`` and the body within ``body_timeout_s`` or the
  connection is closed (408); at most ``max_connections`` connections are open at once;
- auth (``Authorization: Bearer <key>``, 401) and the size limit (``Content-Length`` required, 411; at most
  ``max_body_bytes``, 413) are decided from the headers, before one byte of the body is read;
- at most ``2 x max_concurrent_requests_per_instance`` requests are in flight; the rest get 429 with
  ``Retry-After`` (Azure ML's documented rule);
- a request running past ``request_timeout_ms`` gets 408; the scoring service stops its generation at the next
  step, and the request keeps its in-flight place until it has;
- with ``rehearse_gateway``, a non-200 answer of the scoring container becomes 424 with the container's code and
  reason in ``ms-azureml-model-error-statuscode`` / ``ms-azureml-model-error-reason``, as the managed service
  does; without it the container's own answer (400, 413, 422, ...) is passed through, as ``azmlinfsrv`` gives it;
- a worker that died mid-request gives 502; ``GET /`` answers 200 only when the worker answers its liveness probe.

Codes: https://learn.microsoft.com/azure/machine-learning/how-to-troubleshoot-online-endpoints (HTTP status codes).
The worker behind listens on a Unix socket in a private folder, so nothing else can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from nbhelpers.endpoints.scoring_service import key_matches
from nbhelpers.endpoints.settings import EndpointSettings

#: Headers of the worker's answer that reach the client.
RELAYED_HEADERS = ("content-type", "retry-after", "www-authenticate", "x-request-id", "x-ms-run-fn-exec-ms")


@dataclass
class GatewayLimits:
    """Protections of the gateway against slow, large or too many requests (``nbhelpers serve`` flags)."""

    header_timeout_s: float = field(default=10.0, metadata={"help": "Seconds a client has to send the headers."})
    body_timeout_s: float = field(default=30.0, metadata={"help": "Seconds a client has to send the whole body."})
    max_body_bytes: int = field(default=2**20, metadata={"help": "Largest request body; larger gets 413."})
    max_connections: int = field(default=64, metadata={"help": "Open connections at once; more are refused (503)."})
    health_timeout_s: float = field(default=2.0, metadata={"help": "Seconds the worker has to answer GET /."})

    max_header_bytes = 16 * 1024


class _Reject(Exception):
    """An answer decided before the request reaches the worker."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _http_response(status: int, body: bytes, headers: dict[str, str]) -> bytes:
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Status"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


def _error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": {"status": status, "field": "request", "message": message}}).encode()


def _header_safe(text: str, limit: int = 200) -> str:
    """``text`` as a one-line printable-ASCII header value."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:limit]


class Gateway:
    """The HTTP front for one scoring worker listening on the Unix socket ``worker_socket``.

    Args:
        worker_socket: path of the worker's Unix socket (gunicorn ``--bind unix:PATH``).
        settings: ``request_timeout_ms`` and ``max_concurrent_requests_per_instance`` (Azure's request settings).
        api_key: the key clients must send (``None``: no auth).
        rehearse_gateway: answer a failed scoring request with 424 as the managed service does.
        limits: timeouts and size limits.
    """

    def __init__(
        self,
        worker_socket: str,
        settings: EndpointSettings,
        *,
        api_key: str | None = None,
        rehearse_gateway: bool = False,
        limits: GatewayLimits | None = None,
    ) -> None:
        self.worker_socket = worker_socket
        self.settings = settings
        self.api_key = api_key
        self.rehearse_gateway = rehearse_gateway
        self.limits = limits or GatewayLimits()
        self.in_flight = 0
        self.connections = 0
        self._seconds_per_request = 1.0
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (``port`` 0 picks a free one); return the port."""
        self._server = await asyncio.start_server(self._connection, host, port, limit=self.limits.max_header_bytes)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # --- one connection -------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.connections > self.limits.max_connections:
                status, body, headers = (
                    503,
                    _error_body(503, "too many open connections; retry later."),
                    {"Retry-After": "1"},
                )
            else:
                status, body, headers = await self._answer(reader, writer)
            await self._send(writer, status, body, headers)
            await self._linger(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        finally:
            self.connections -= 1
            writer.transport.abort()

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str]) -> None:
        headers = {"Content-Type": "application/json", **headers}
        writer.write(_http_response(status, body, headers))
        with contextlib.suppress(TimeoutError):  # a client that does not read its answer is dropped
            await asyncio.wait_for(writer.drain(), self.limits.body_timeout_s)

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float = 2.0) -> None:
        """Half-close, then discard what the client still sends for up to ``seconds``.

        A client refused before its body was read (401, 413) is still sending it; closing at once would reset
        the connection and the kernel would drop the answer before the client reads it (nginx calls this
        "lingering close"). Nothing read here is kept.
        """
        if writer.can_write_eof():
            writer.write_eof()
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while (remaining := deadline - time.monotonic()) > 0:
                if not await asyncio.wait_for(reader.read(2**16), remaining):
                    break

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, bytes, dict[str, str]]:
        try:
            method, path, headers = await self._read_head(reader)
            if path == "/" and method in ("GET", "HEAD"):
                return await self._liveness()
            if path.split("?")[0] != "/score":
                raise _Reject(404, f"no route {path}; the endpoint answers GET / and POST /score.")
            if method != "POST":
                raise _Reject(405, "use POST /score with the JSON request.", {"Allow": "POST"})
            body = await self._read_body(reader, writer, headers)
            # Admission after the body: a slow upload holds a connection (cheap, bounded), never a scoring place.
            if self.in_flight >= self.settings.max_in_flight:
                retry_after = str(max(1, math.ceil(self._seconds_per_request)))
                raise _Reject(
                    429,
                    f"too many requests in flight (at most 2 x max_concurrent_requests_per_instance"
                    f" = {self.settings.max_in_flight}); retry after {retry_after} s.",
                    {"Retry-After": retry_after},
                )
        except _Reject as reject:
            return reject.status, _error_body(reject.status, str(reject)), reject.headers
        return await self._score(headers, body)

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.header_timeout_s)
        except TimeoutError:
            raise _Reject(408, f"headers not received within {self.limits.header_timeout_s:g} s.") from None
        except asyncio.LimitOverrunError:
            raise _Reject(431, f"headers larger than {self.limits.max_header_bytes} bytes.") from None
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Reject(400, "malformed HTTP request line.")
        headers: dict[str, str] = {}
        for line in filter(None, header_lines):
            name, colon, value = line.partition(":")
            name = name.strip().lower()
            if not colon or not name:
                raise _Reject(400, "malformed header line.")
            if name in headers and name in ("content-length", "authorization", "transfer-encoding"):
                raise _Reject(400, f"the {name} header is repeated.")
            headers[name] = value.strip()
        return parts[0], parts[1], headers

    def _admit_headers(self, headers: dict[str, str]) -> int:
        """Auth and size, from the headers alone; returns the body length."""
        if not key_matches(self.api_key, headers):
            raise _Reject(
                401, "missing or wrong key: send 'Authorization: Bearer <key>'.", {"WWW-Authenticate": "Bearer"}
            )
        if "transfer-encoding" in headers or "content-length" not in headers:
            raise _Reject(411, "send the body with a Content-Length header (chunked bodies are not accepted).")
        length_text = headers["content-length"]
        if not length_text.isdigit() or len(length_text) > 12:
            raise _Reject(400, "Content-Length must be a whole number of bytes.")
        length = int(length_text)
        if length > self.limits.max_body_bytes:
            raise _Reject(413, f"body of {length} bytes; at most {self.limits.max_body_bytes}.")
        return length

    async def _read_body(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> bytes:
        length = self._admit_headers(headers)
        if headers.get("expect", "").lower() == "100-continue":  # curl waits for this before sending large bodies
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            return await asyncio.wait_for(reader.readexactly(length), self.limits.body_timeout_s)
        except TimeoutError:
            raise _Reject(408, f"body not received within {self.limits.body_timeout_s:g} s.") from None

    async def _score(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        start = time.monotonic()
        timeout_s = self.settings.request_timeout_ms / 1000
        forwarded = {k: v for k, v in headers.items() if k in ("authorization", "content-type", "x-request-id")}
        # The request holds its in-flight place until the worker has answered, not until the client has: after a
        # 408 the service still needs up to one denoising step to stop. A worker silent for twice the timeout
        # is given up on, so a wedged worker cannot hold places for ever.
        self.in_flight += 1
        call = asyncio.ensure_future(
            asyncio.wait_for(self._worker_request("POST", "/score", forwarded, body), 2 * timeout_s + 5)
        )
        call.add_done_callback(self._release)
        done, _ = await asyncio.wait({call}, timeout=timeout_s)
        if not done:
            message = (
                f"the request ran past request_timeout_ms={self.settings.request_timeout_ms}; its generation"
                " is being stopped."
            )
            return 408, _error_body(408, message), {}
        try:
            status, reason, worker_headers, answer = call.result()
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as err:
            return (
                502,
                _error_body(
                    502,
                    f"the scoring worker failed or restarted mid-request ({type(err).__name__})."
                    " Retry in a few seconds.",
                ),
                {"Retry-After": "5"},
            )
        if status == 200:
            self._seconds_per_request = 0.8 * self._seconds_per_request + 0.2 * (time.monotonic() - start)
        relayed = {k.title(): v for k, v in worker_headers.items() if k in RELAYED_HEADERS}
        if status == 200 or not self.rehearse_gateway:
            return status, answer, relayed
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            reason = json.loads(answer)["error"]["message"]
        relayed |= {
            "ms-azureml-model-error-statuscode": str(status),
            "ms-azureml-model-error-reason": _header_safe(str(reason)),
        }
        return 424, answer, relayed

    def _release(self, call: asyncio.Future[Any]) -> None:
        self.in_flight -= 1
        if not call.cancelled():
            call.exception()  # retrieved here: after a 408 nobody else looks at it

    async def _liveness(self) -> tuple[int, bytes, dict[str, str]]:
        try:
            status, _, _, _ = await asyncio.wait_for(
                self._worker_request("GET", "/", {}, b""), self.limits.health_timeout_s
            )
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            status = 503
        if status == 200:
            return 200, b"Healthy", {"Content-Type": "text/plain"}
        return (
            503,
            _error_body(503, "the scoring worker is starting (loading the model) or restarting."),
            {"Retry-After": "5"},
        )

    async def _worker_request(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, dict[str, str], bytes]:
        """One HTTP/1.1 exchange with the worker; returns ``(status, reason, headers, body)``."""
        reader, writer = await asyncio.open_unix_connection(self.worker_socket, limit=2**16)
        try:
            head = [
                f"{method} {path} HTTP/1.1",
                "Host: localhost",
                "Connection: close",
                f"Content-Length: {len(body)}",
            ] + [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            raw = await reader.read()  # the worker closes the connection after its answer
        finally:
            writer.close()
        head_bytes, separator, answer = raw.partition(b"\r\n\r\n")
        if not separator:
            raise asyncio.IncompleteReadError(raw, None)
        status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
        _, status_text, reason = (status_line.split(" ", 2) + [""])[:3]
        parsed: dict[str, Any] = {}
        for line in lines:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
        return int(status_text), reason, parsed, answer
