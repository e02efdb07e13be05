"""Call an online text-to-image endpoint (Azure ML managed endpoint or the local server) and get PIL images.

    client = EndpointClient("https://<endpoint>.<region>.inference.ml.azure.com/score", key="...")
    images = client.generate(["a photograph of an astronaut riding a horse"], num_inference_steps=30)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests
from PIL import Image

from nbhelpers.endpoints.contract import decode_image

RETRY_STATUSES = frozenset({429, 502, 503, 504})


class EndpointError(RuntimeError):
    """The endpoint refused a request (4xx) or kept failing; ``status`` and the server's ``body`` are kept."""

    def __init__(self, status: int | None, message: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.body = body


@dataclass
class GeneratedImage:
    """One row of the response: the prompt, the decoded image and the safety checker's verdict."""

    prompt: str
    image: Image.Image
    nsfw_content_detected: bool | None


def request_body(prompts: list[str], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract's request JSON for ``prompts`` (and optional generation parameters)."""
    payload: dict[str, Any] = {"columns": ["prompt"], "data": list(prompts), "index": list(range(len(prompts)))}
    if parameters:
        payload["parameters"] = parameters
    return {"input_data": payload}


class EndpointClient:
    """A client for one scoring URL.

    Args:
        url: the scoring URL (``.../score``).
        key: the endpoint key or token, sent as ``Authorization: Bearer <key>``.
        timeout_s: seconds to wait for one response (generation included).
        retries: further attempts on 429/502/503/504 and connection errors.
        backoff_s: first wait between attempts, doubled each time; a ``Retry-After`` header wins (capped at 60 s).
        deployment: optional ``azureml-model-deployment`` header to pick a deployment of the endpoint.
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
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.session = session or requests.Session()
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        if deployment:
            self.headers["azureml-model-deployment"] = deployment

    def score(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """POST a request body; return the parsed response list. Retries as configured."""
        wait = self.backoff_s
        last_error = "no attempt made"
        for attempt in range(self.retries + 1):
            try:
                response = self.session.post(self.url, json=body, headers=self.headers, timeout=self.timeout_s)
            except requests.RequestException as err:
                last_error = f"{type(err).__name__}: {err}"
                response = None
            if response is not None:
                if response.status_code == 200:
                    return response.json()
                try:
                    detail = response.json()
                except ValueError:
                    detail = response.text
                last_error = str(detail)
                if response.status_code not in RETRY_STATUSES:
                    raise EndpointError(response.status_code, last_error, detail)
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait = min(60.0, float(retry_after))
            if attempt < self.retries:
                time.sleep(wait)
                wait = min(60.0, wait * 2)
        raise EndpointError(getattr(response, "status_code", None), f"gave up after {self.retries + 1} attempts: "
                            f"{last_error}")

    def generate(self, prompts: list[str], **parameters: Any) -> list[GeneratedImage]:
        """Generate one image per prompt; ``parameters`` are e.g. ``num_inference_steps``, ``guidance_scale``."""
        rows = self.score(request_body(prompts, parameters))
        return [GeneratedImage(r["prompt"], decode_image(r["generated_image"]), r.get("nsfw_content_detected"))
                for r in rows]
