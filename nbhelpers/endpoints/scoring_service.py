"""The model behind the online endpoint: auth, admission control, validation, generation, the response.

Both the Azure ML scoring script (``nbhelpers/scoring/online_score.py``, run by ``azmlinfsrv`` locally and by
managed online endpoints) and the tests use :class:`ScoringService`. Configuration comes from environment
variables, so the same script runs everywhere:

===============================  =============================================================================
``NBHELPERS_MODEL``              catalog name, hub id or folder (default ``deci-v1``); a pipeline folder in
                                 ``AZUREML_MODEL_DIR`` (the registered model of a deployment) wins
``NBHELPERS_TINY``               ``1`` for the offline tiny model (tests)
``NBHELPERS_API_KEY``            when set, requests need ``Authorization: Bearer <key>`` (else 401)
``NBHELPERS_MAX_ROWS``           prompts per request (default 4; more gets 413)
``NBHELPERS_MAX_CONCURRENCY``    generations at once (default 1); requests beyond wait ``NBHELPERS_QUEUE_TIMEOUT``
                                 seconds (default 0.5) for a slot, then get 503 with ``Retry-After``
``CONTENT_SAFETY_ENDPOINT/KEY``  optional Azure AI Content Safety screen of prompts and images
===============================  =============================================================================
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image

from nbhelpers.endpoints.content_safety import ContentSafetyScreen
from nbhelpers.endpoints.contract import DEFAULT_MAX_ROWS, ContractError, build_response, parse_request

logger = logging.getLogger(__name__)

JSON_HEADERS = {"Content-Type": "application/json"}


def model_source_from_environment() -> str:
    """The model to serve: a pipeline folder inside ``AZUREML_MODEL_DIR`` if there is one, else ``NBHELPERS_MODEL``."""
    model_dir = os.environ.get("AZUREML_MODEL_DIR")
    if model_dir:
        for index_file in sorted(Path(model_dir).glob("**/model_index.json")):
            return str(index_file.parent)
    return os.environ.get("NBHELPERS_MODEL", "deci-v1")


class ScoringService:
    """Turns request bodies into responses for one loaded pipeline; safe to call from several threads.

    Args:
        pipe: a loaded text-to-image pipeline.
        max_rows: prompts allowed per request.
        max_concurrency: generations running at once; others wait ``queue_timeout_s`` then get 503.
        api_key: when set, the ``Authorization: Bearer <key>`` header must carry it.
        screen: optional content-safety screen.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_concurrency: int = 1,
        queue_timeout_s: float = 0.5,
        api_key: str | None = None,
        screen: ContentSafetyScreen | None = None,
    ) -> None:
        if max_concurrency < 1 or max_rows < 1:
            raise ValueError("max_concurrency and max_rows must be at least 1.")
        self.pipe = pipe
        self.max_rows = max_rows
        self.queue_timeout_s = queue_timeout_s
        self.api_key = api_key or None
        self.screen = screen
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._last_seconds = 1.0

    @classmethod
    def from_environment(cls) -> ScoringService:
        """Load the model and settings named by the environment variables in the module docstring."""
        from nbhelpers.loading import load_pipeline

        pipe = load_pipeline(model_source_from_environment(), progress=False)
        return cls(
            pipe,
            max_rows=int(os.environ.get("NBHELPERS_MAX_ROWS", DEFAULT_MAX_ROWS)),
            max_concurrency=int(os.environ.get("NBHELPERS_MAX_CONCURRENCY", 1)),
            queue_timeout_s=float(os.environ.get("NBHELPERS_QUEUE_TIMEOUT", 0.5)),
            api_key=os.environ.get("NBHELPERS_API_KEY"),
            screen=ContentSafetyScreen.from_environment(),
        )

    def _authorised(self, headers: dict[str, str]) -> bool:
        if self.api_key is None:
            return True
        supplied = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        return hmac.compare_digest(supplied.encode(), f"Bearer {self.api_key}".encode())

    def handle(self, body: str | bytes, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        """Return ``(status, JSON-serialisable body, headers)`` for one request."""
        if not self._authorised(headers or {}):
            error = ContractError("Authorization", "missing or wrong key: send 'Authorization: Bearer <key>'.", 401)
            return 401, error.to_json(), {**JSON_HEADERS, "WWW-Authenticate": "Bearer"}
        try:
            request = parse_request(body, max_rows=self.max_rows)
        except ContractError as error:
            return error.status, error.to_json(), JSON_HEADERS
        if not self._slots.acquire(timeout=self.queue_timeout_s):
            retry_after = str(max(1, math.ceil(self._last_seconds)))
            error = ContractError("server", f"busy: all generation slots are taken; retry in {retry_after} s.", 503)
            return 503, error.to_json(), {**JSON_HEADERS, "Retry-After": retry_after}
        try:
            start = time.perf_counter()
            response = self._generate(request.prompts, request.parameters)
            self._last_seconds = time.perf_counter() - start
        except ValueError as error:  # a setting the model cannot take (e.g. steps for this scheduler)
            return 422, ContractError("input_data.parameters", str(error), 422).to_json(), JSON_HEADERS
        finally:
            self._slots.release()
        return 200, response, JSON_HEADERS

    def _generate(self, prompts: list[str], parameters: dict[str, Any]) -> list[dict[str, Any]]:
        from nbhelpers.generation import generate

        settings = dict(parameters)
        seed = settings.pop("seed", 0)
        blocked = [self.screen.blocks_text(p) for p in prompts] if self.screen else [False] * len(prompts)
        allowed = [p for p, b in zip(prompts, blocked, strict=True) if not b]
        images: list[Image.Image] = []
        nsfw: list[bool | None] = []
        result = generate(self.pipe, allowed, seed=seed, **settings) if allowed else None
        generated = iter(zip(result.images, result.nsfw, strict=True)) if result else iter(())
        size = (settings.get("width", 512), settings.get("height", 512))
        for is_blocked in blocked:
            if is_blocked:
                images.append(Image.new("RGB", result.images[0].size if result else size))
                nsfw.append(True)
                continue
            image, flagged = next(generated)
            if self.screen and self.screen.blocks_image(image):
                image, flagged = Image.new("RGB", image.size), True
            images.append(image)
            nsfw.append(flagged)
        return build_response(prompts, images, nsfw)


def to_json_text(body: Any) -> str:
    """Serialise a response body."""
    return json.dumps(body)
