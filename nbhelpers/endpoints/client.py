"""Call an online text-to-image endpoint (Azure ML managed endpoint or the local server) and get PIL images.

    client = EndpointClient("https://<endpoint>.<region>.inference.ml.azure.com/score", key="...")
    images = client.generate(["a photograph of an astronaut riding a horse"], num_inference_steps=30)

Retries are urllib3's ``Retry`` mounted on a requests ``HTTPAdapter``: answers 408, 429, 502, 503 and 504 and
failed connections are tried again with exponential backoff, honouring ``Retry-After`` (what Azure ML asks of
clients that get 429: https://learn.microsoft.com/azure/machine-learning/how-to-troubleshoot-online-endpoints).
Never retried: 4xx input errors (400, 401, 413, 422, and 424, the managed endpoint's wrapper of a scoring error)
and a read timeout, because a request that reached the server may still be generating, and sending it again
would only double the work; the server stops timed-out generations itself and answers 408.

With ``record_timings=True`` the client keeps, per request, when each attempt was sent and answered and with which
status (:class:`RequestTiming`), for a timeline of concurrent requests and their retries (notebook 04).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from PIL import Image
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from nbhelpers.endpoints.contract import decode_image

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
#: Longest wait between two attempts, whatever ``Retry-After`` asks (seconds).
MAX_WAIT_S = 60


class EndpointError(RuntimeError):
    """The endpoint refused a request or kept failing; ``status``, the server's ``body`` and the reason are kept.

    Attributes:
        status: the last HTTP status (``None`` when no answer came).
        body: the last answer's JSON (or text).
        attempts: how many times the request was sent.
    """

    def __init__(self, status: int | None, message: str, body: Any = None, attempts: int = 1) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.body = body
        self.attempts = attempts


@dataclass
class GeneratedImage:
    """One row of the response: the prompt, the decoded image and the safety checker's verdict."""

    prompt: str
    image: Image.Image
    nsfw_content_detected: bool | None


@dataclass(frozen=True)
class Attempt:
    """One sending of a request: ``time.perf_counter()`` seconds when it was sent and answered, and the answer's
    status (``None``: no answer, e.g. the connection failed or timed out)."""

    start_s: float
    end_s: float
    status: int | None


@dataclass(frozen=True)
class RequestTiming:
    """Every attempt of one request, in order; the wait between two attempts is the retry's backoff."""

    attempts: tuple[Attempt, ...]

    @property
    def start_s(self) -> float:
        """When the first attempt was sent."""
        return self.attempts[0].start_s

    @property
    def end_s(self) -> float:
        """When the last attempt was answered (or failed)."""
        return self.attempts[-1].end_s

    @property
    def status(self) -> int | None:
        """The last attempt's status: what the caller got."""
        return self.attempts[-1].status

    @property
    def retries(self) -> int:
        """Attempts after the first."""
        return len(self.attempts) - 1


class _AttemptEvents(threading.local):
    """What :class:`TimedRetry` noted for the request the current thread is sending (``None``: not recording).

    Thread-local because urllib3 retries inside the calling thread, and one client may serve several threads."""

    events: list[tuple[str, float, int | None]] | None = None


_ATTEMPT_EVENTS = _AttemptEvents()


class TimedRetry(Retry):
    """urllib3's :class:`~urllib3.util.retry.Retry`, which also notes when a failed attempt was answered and when the
    next one was sent (after the backoff), for :class:`EndpointClient`'s timings. Retrying itself is unchanged."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> TimedRetry:
        events = _ATTEMPT_EVENTS.events
        if events is not None:
            events.append(("answered", time.perf_counter(), response.status if response is not None else None))
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def sleep(self, response: Any = None) -> None:
        super().sleep(response)
        events = _ATTEMPT_EVENTS.events
        if events is not None:
            events.append(("sent", time.perf_counter(), None))


def _attempts(
    start_s: float, end_s: float, events: list[tuple[str, float, int | None]], status: int | None
) -> tuple[Attempt, ...]:
    """Attempts from the retry's notes: each failed attempt ends when it was answered, the next starts when sent;
    the last one (unless the retry already noted its answer, as when retries ran out) ends at ``end_s``."""
    attempts: list[Attempt] = []
    sent: float | None = start_s
    for kind, at, answer in events:
        if kind == "answered" and sent is not None:
            attempts.append(Attempt(sent, at, answer))
            sent = None
        elif kind == "sent":
            sent = at
    if sent is not None:
        attempts.append(Attempt(sent, end_s, status))
    return tuple(attempts)


def request_body(prompts: list[str], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract's request JSON for ``prompts`` (and optional generation parameters)."""
    payload: dict[str, Any] = {"columns": ["prompt"], "data": list(prompts), "index": list(range(len(prompts)))}
    if parameters:
        payload["parameters"] = parameters
    return {"input_data": payload}


def retry_policy(retries: int, backoff_s: float) -> Retry:
    """urllib3's policy for the endpoint: ``retries`` more attempts on busy answers and failed connections.

    urllib3's backoff: the first retry follows at once, the next after ``2 x backoff_s``, then ``4 x``, ``8 x``...
    (at most :data:`MAX_WAIT_S`); a ``Retry-After`` the server sends wins (also capped).
    """
    return TimedRetry(
        total=retries,
        connect=retries,
        read=False,
        status=retries,
        other=0,
        redirect=0,
        allowed_methods=None,  # POST included: generation is repeatable (same seed, same image)
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff_s,
        backoff_max=MAX_WAIT_S,
        respect_retry_after_header=True,
        retry_after_max=MAX_WAIT_S,
        raise_on_status=False,
    )


def _detail(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


class EndpointClient:
    """A client for one scoring URL.

    Args:
        url: the scoring URL (``.../score``).
        key: the endpoint key or token, sent as ``Authorization: Bearer <key>``.
        timeout_s: seconds to wait for one answer; keep it above the server's ``request_timeout_ms`` so the
            server answers 408 first.
        retries: further attempts on 408/429/502/503/504 and failed connections (0: none).
        backoff_s: backoff factor: waits of 0, 2, 4, 8... x ``backoff_s``; ``Retry-After`` wins (capped at 60 s).
        deployment: optional ``azureml-model-deployment`` header to pick a deployment of the endpoint.
        session: a requests session to use (the retry adapter is mounted on it).
        record_timings: keep a :class:`RequestTiming` of every request in :attr:`timings` (attempts, statuses).
    """

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        timeout_s: float = 300.0,
        retries: int = 4,
        backoff_s: float = 1.0,
        deployment: str | None = None,
        session: requests.Session | None = None,
        record_timings: bool = False,
    ) -> None:
        self.url = url
        self.record_timings = record_timings
        #: One entry per request sent (in the order they finished) when ``record_timings`` is on.
        self.timings: list[RequestTiming] = []
        self.timeout_s = timeout_s
        self.retries = retries
        self.session = session or requests.Session()
        adapter = HTTPAdapter(max_retries=retry_policy(retries, backoff_s))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        if deployment:
            self.headers["azureml-model-deployment"] = deployment

    def score(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """POST a request body; return the parsed response list.

        Raises:
            EndpointError: the endpoint refused the request (4xx: not retried), kept answering busy or failing
                after every retry, could not be reached, did not answer within ``timeout_s``, or answered 200
                with something that is not the contract's JSON list. The message says which.
        """
        if not self.record_timings:
            return self._score(body)
        events: list[tuple[str, float, int | None]] = []
        _ATTEMPT_EVENTS.events = events
        start, status = time.perf_counter(), None
        try:
            rows = self._score(body)
            status = 200
            return rows
        except EndpointError as err:
            status = err.status
            raise
        finally:
            _ATTEMPT_EVENTS.events = None
            self.timings.append(RequestTiming(_attempts(start, time.perf_counter(), events, status)))

    def _score(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            response = self.session.post(self.url, json=body, headers=self.headers, timeout=self.timeout_s)
        except requests.ConnectionError as err:
            raise EndpointError(
                None,
                f"could not reach {self.url}, or lost the connection, after {self.retries + 1} attempt(s): {err}",
                attempts=self.retries + 1,
            ) from err
        except requests.Timeout as err:
            raise EndpointError(
                None,
                f"no answer within timeout_s={self.timeout_s:g} s; not retried, because "
                "the server may still be working on it.",
            ) from err
        history = getattr(getattr(response.raw, "retries", None), "history", ()) or ()
        attempts = len(history) + 1
        if response.status_code == 200:
            try:
                rows = response.json()
            except ValueError:
                raise EndpointError(
                    200,
                    f"answered 200 but not with JSON (Content-Type "
                    f"{response.headers.get('Content-Type')!r}): {response.text[:200]!r}. Is "
                    f"{self.url} the scoring URL?",
                    response.text[:500],
                    attempts,
                ) from None
            if not isinstance(rows, list):
                raise EndpointError(
                    200,
                    f"answered 200 with {type(rows).__name__}, not the contract's list of rows: {str(rows)[:200]}",
                    rows,
                    attempts,
                )
            return rows
        detail = _detail(response)
        if response.status_code in RETRY_STATUSES:
            earlier = ", ".join(str(h.status or h.error) for h in history)
            why = (
                (
                    f"gave up after {attempts} attempts (answers: {earlier}, {response.status_code}); the endpoint "
                    "stayed busy or unavailable. Retry later, or raise retries/timeout"
                )
                if self.retries
                else "not retried (retries=0)"
            )
            raise EndpointError(response.status_code, f"{why}: {detail}", detail, attempts)
        model_status = response.headers.get("ms-azureml-model-error-statuscode")
        if model_status:  # 424 from a managed endpoint: the scoring container's own code and reason
            reason = response.headers.get("ms-azureml-model-error-reason", "")
            raise EndpointError(
                response.status_code,
                f"the model answered {model_status} ({reason}); not retried: {detail}",
                detail,
                attempts,
            )
        raise EndpointError(
            response.status_code, f"request refused, not retried (fix the request): {detail}", detail, attempts
        )

    def generate(self, prompts: list[str], **parameters: Any) -> list[GeneratedImage]:
        """Generate one image per prompt; ``parameters`` are e.g. ``num_inference_steps``, ``guidance_scale``."""
        rows = self.score(request_body(prompts, parameters))
        return [
            GeneratedImage(r["prompt"], decode_image(r["generated_image"]), r.get("nsfw_content_detected"))
            for r in rows
        ]
