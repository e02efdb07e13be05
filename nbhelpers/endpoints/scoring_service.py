"""The model behind the online endpoint: auth, validation, concurrent generation with a deadline, the response.

The Azure ML scoring script (``nbhelpers/endpoints/scoring/online_score.py``, run by ``azmlinfsrv`` locally and by
managed online endpoints) and the tests use :class:`ScoringService`. Its configuration is
:class:`~nbhelpers.endpoints.settings.EndpointSettings`, read from ``NBHELPERS_*`` environment variables, so the
same script runs everywhere.

Concurrency is real: ``max_concurrent_requests_per_instance`` requests generate at once, each on its own *view*
of the loaded pipeline (:class:`PipelinePool`): the weights are shared, the scheduler (which keeps the step index
of the running denoising loop) and the tokenizer (a fast tokenizer is not safe to call from two threads) are
per view. On CPU an image made this way equals, byte for byte, the same request made alone.

Deadline: a request that is still waiting for a view or generating after ``request_timeout_ms`` gets 408, and its
generation stops at the next denoising step through diffusers' ``callback_on_step_end`` (setting
``pipe._interrupt``, diffusers' documented way to stop a pipeline early:
https://huggingface.co/docs/diffusers/using-diffusers/callback), so abandoned work does not hold a slot. Azure's
gateway answers 408 itself but does not stop the container's work; this does.
"""

from __future__ import annotations

import copy
import hmac
import logging
import os
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from nbhelpers.endpoints.content_safety import ContentSafetyScreen
from nbhelpers.endpoints.contract import ContractError, build_response, parse_request
from nbhelpers.endpoints.settings import EndpointSettings, read_api_key
from nbhelpers.stand_in import stand_in_mark

logger = logging.getLogger(__name__)

JSON_HEADERS = {"Content-Type": "application/json"}


def model_source_from_environment(default: str = "deci-v1") -> str:
    """The model to serve: a pipeline folder inside ``AZUREML_MODEL_DIR`` if there is one, else ``NBHELPERS_MODEL``."""
    model_dir = os.environ.get("AZUREML_MODEL_DIR")
    if model_dir:
        for index_file in sorted(Path(model_dir).glob("**/model_index.json")):
            return str(index_file.parent)
    return os.environ.get("NBHELPERS_MODEL", default)


def bearer_key(headers: dict[str, str]) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (scheme case-insensitive, RFC 7235), else ``None``."""
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, key = value.strip().partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def key_matches(expected: str | None, headers: dict[str, str]) -> bool:
    """Whether ``headers`` carry the ``expected`` bearer key (always true when no key is set); constant time."""
    if expected is None:
        return True
    supplied = bearer_key(headers)
    return supplied is not None and hmac.compare_digest(supplied.encode(), expected.encode())


class PipelinePool:
    """``size`` views of one pipeline that share its weights; each view runs one generation at a time.

    Args:
        pipe: a loaded pipeline (``pipe.components`` are reused; scheduler and tokenizer are copied per view).
        size: views, i.e. generations that may run at once.
    """

    def __init__(self, pipe: Any, size: int) -> None:
        self._free: queue.Queue[Any] = queue.Queue()
        for number in range(size):
            if number == 0:
                view = pipe
            else:
                components = {
                    **pipe.components,
                    "scheduler": copy.deepcopy(pipe.scheduler),
                    "tokenizer": copy.deepcopy(pipe.tokenizer),
                }
                view = type(pipe)(**components)
                view.nbhelpers_info = getattr(pipe, "nbhelpers_info", None)
            view.set_progress_bar_config(disable=True)
            self._free.put(view)

    @contextmanager
    def view(self, timeout_s: float) -> Iterator[Any]:
        """A free view for the duration of the block; raises ``TimeoutError`` if none frees within ``timeout_s``."""
        try:
            view = self._free.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            raise TimeoutError from None
        try:
            yield view
        finally:
            self._free.put(view)


class ScoringService:
    """Turns request bodies into responses for one loaded pipeline; safe to call from several threads.

    Args:
        pipe: a loaded text-to-image pipeline.
        settings: rows per request, generations at once, request timeout (default: ``EndpointSettings()``).
        api_key: when set, the ``Authorization: Bearer <key>`` header must carry it (else 401).
        screen: optional content-safety screen.
    """

    def __init__(
        self,
        pipe: Any,
        settings: EndpointSettings | None = None,
        *,
        api_key: str | None = None,
        screen: ContentSafetyScreen | None = None,
    ) -> None:
        self.settings = settings or EndpointSettings()
        self.api_key = api_key or None
        self.screen = screen
        self.pool = PipelinePool(pipe, self.settings.max_concurrent_requests_per_instance)
        from nbhelpers.generation import pipeline_size_multiple  # torch: only the scoring worker loads it

        self.size_multiple = pipeline_size_multiple(pipe)  # image sides this model takes, checked with the request

    @classmethod
    def from_environment(cls) -> ScoringService:
        """Load the model and settings named by the ``NBHELPERS_*`` variables (:mod:`~nbhelpers.endpoints.settings`)."""
        # Lazy: torch, which the gateway (it imports this module) must not load.
        from nbhelpers.loading import load_pipeline

        settings = EndpointSettings.from_environment()
        source = model_source_from_environment(settings.model)
        mark = stand_in_mark(settings.stand_in)  # resolved by EndpointSettings
        logger.warning("nbhelpers: loading model %s%s", source, f" ({mark})" if mark else "")
        start = time.perf_counter()
        pipe = load_pipeline(source, stand_in=settings.stand_in or "none", progress=True)
        logger.warning("nbhelpers: model loaded in %.1f s; warming up", time.perf_counter() - start)
        service = cls(pipe, settings, api_key=read_api_key(), screen=ContentSafetyScreen.from_environment())
        start = time.perf_counter()
        # The first call of a fresh process is many times slower (kernel selection, allocator); paying it here,
        # before the probe answers 200, keeps it out of the first request's request_timeout_ms.
        # Lazy: torch, which the gateway (it imports this module) must not load.
        from nbhelpers.generation import generate

        with service.pool.view(timeout_s=0) as view:
            generate(view, "warm-up", num_inference_steps=1)
        logger.warning("nbhelpers: warm-up generation done in %.1f s; ready", time.perf_counter() - start)
        return service

    def handle(self, body: str | bytes, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        """Return ``(status, JSON-serialisable body, headers)`` for one request."""
        deadline = time.monotonic() + self.settings.request_timeout_ms / 1000
        if not key_matches(self.api_key, headers or {}):
            error = ContractError("Authorization", "missing or wrong key: send 'Authorization: Bearer <key>'.", 401)
            return 401, error.to_json(), {**JSON_HEADERS, "WWW-Authenticate": "Bearer"}
        try:
            request = parse_request(body, max_rows=self.settings.max_rows, size_multiple=self.size_multiple)
        except ContractError as error:
            return error.status, error.to_json(), JSON_HEADERS
        timed_out = ContractError(
            "server",
            f"the request ran past request_timeout_ms={self.settings.request_timeout_ms}; its generation was stopped.",
            408,
        )
        try:
            with self.pool.view(deadline - time.monotonic()) as pipe:
                response = self._generate(pipe, request.prompts, request.parameters, deadline)
        except TimeoutError:
            return 408, timed_out.to_json(), JSON_HEADERS
        except ValueError as error:  # a setting the model cannot take (e.g. steps for this scheduler)
            return 422, ContractError("input_data.parameters", str(error), 422).to_json(), JSON_HEADERS
        return 200, response, JSON_HEADERS

    def _generate(
        self, pipe: Any, prompts: list[str], parameters: dict[str, Any], deadline: float
    ) -> list[dict[str, Any]]:
        # Lazy: torch, which the gateway (it imports this module) must not load.
        from nbhelpers.generation import generate

        def stop_after_deadline(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if time.monotonic() > deadline:
                pipeline._interrupt = True  # diffusers' documented early stop; the loop skips the remaining steps
            return tensors

        settings = dict(parameters)
        seed = settings.pop("seed", 0)
        blocked = [self.screen.blocks_text(p) for p in prompts] if self.screen else [False] * len(prompts)
        allowed = [p for p, b in zip(prompts, blocked, strict=True) if not b]
        result = None
        if allowed:
            result = generate(pipe, allowed, seed=seed, callback_on_step_end=stop_after_deadline, **settings)
            if pipe.interrupt or time.monotonic() > deadline:
                raise TimeoutError
        images: list[Image.Image] = []
        nsfw: list[bool | None] = []
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
