"""The Azure ML text-to-image JSON contract: parse and validate requests, build responses.

Request (both ``data`` layouts: a list of prompts, or rows ``[["prompt"], ...]`` in pandas "split" form)::

    {"input_data": {"columns": ["prompt"], "data": ["a photo of ..."], "index": [0],
                    "parameters": {"num_inference_steps": 50, "guidance_scale": 7.5}}}

Response: one object per row, in input order::

    [{"prompt": "...", "generated_image": "<base64 PNG>", "nsfw_content_detected": false}]

Every invalid request raises :class:`ContractError` carrying the HTTP status, the offending field and the
allowed range; ``to_json()`` is the error body the servers return.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

#: Generation parameters a request may carry, with their type and allowed range (inclusive).
PARAMETER_RULES: dict[str, tuple[type, Any, Any]] = {
    "num_inference_steps": (int, 1, 150),
    "guidance_scale": (float, 0.0, 30.0),
    "guidance_rescale": (float, 0.0, 1.0),
    "seed": (int, 0, 2**32 - 1),
    "height": (int, 64, 1024),
    "width": (int, 64, 1024),
    "negative_prompt": (str, None, None),
}
DEFAULT_MAX_ROWS = 4
MAX_PROMPT_CHARS = 2000


class ContractError(ValueError):
    """An invalid request: ``status`` is the HTTP status (4xx), ``field`` the JSON path of the bad value."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status

    def to_json(self) -> dict[str, Any]:
        """The error body: ``{"error": {"status": ..., "field": ..., "message": ...}}``."""
        return {"error": {"status": self.status, "field": self.field, "message": self.message}}


@dataclass
class ScoringRequest:
    """A validated request: prompts in input order, their index labels, and generation parameters."""

    prompts: list[str]
    index: list[Any]
    parameters: dict[str, Any] = field(default_factory=dict)


def _check_parameter(name: str, value: Any) -> Any:
    kind, low, high = PARAMETER_RULES[name]
    where = f"input_data.parameters.{name}"
    if kind is str:
        if not isinstance(value, str):
            raise ContractError(where, f"must be a string; got {type(value).__name__}.")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ContractError(where, f"must be a number between {low} and {high}; got {value!r}.")
    if kind is int and float(value) != int(value):
        raise ContractError(where, f"must be a whole number between {low} and {high}; got {value!r}.")
    value = kind(value)
    if not low <= value <= high:
        raise ContractError(where, f"must be between {low} and {high}; got {value}.")
    if name in ("height", "width") and value % 8:
        raise ContractError(where, f"must be a multiple of 8 between {low} and {high}; got {value}.")
    return value


def parse_request(body: str | bytes | dict[str, Any], *, max_rows: int = DEFAULT_MAX_ROWS) -> ScoringRequest:
    """Validate a request body (JSON text or an already parsed dict) and return a :class:`ScoringRequest`.

    Raises:
        ContractError: malformed JSON, a missing or wrongly typed field, empty data, an index of the wrong
            length, an empty or non-string prompt, more than ``max_rows`` rows (413), an unknown or
            out-of-range parameter.
    """
    if isinstance(body, (str, bytes)):
        try:
            body = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ContractError("body", f"is not valid JSON ({err}).") from None
    if not isinstance(body, dict) or not isinstance(body.get("input_data"), dict):
        raise ContractError("input_data", 'is required: send {"input_data": {"columns": ["prompt"], "data": [...]}}.')
    payload = body["input_data"]
    unknown_keys = sorted(set(payload) - {"columns", "data", "index", "parameters"})
    if unknown_keys:
        allowed = "columns, data, index, parameters"
        raise ContractError("input_data", f"has unknown keys {unknown_keys}; allowed: {allowed}.")
    columns = payload.get("columns", ["prompt"])
    if not isinstance(columns, list) or "prompt" not in columns:
        raise ContractError("input_data.columns", 'must be a list that contains "prompt".')
    prompt_column = columns.index("prompt")
    data = payload.get("data")
    if not isinstance(data, list) or not data:
        raise ContractError("input_data.data", "must be a non-empty list of prompts.")
    if len(data) > max_rows:
        raise ContractError("input_data.data", f"has {len(data)} rows; at most {max_rows} per request.", status=413)
    prompts = []
    for row_number, row in enumerate(data):
        where = f"input_data.data[{row_number}]"
        if isinstance(row, list):
            if len(row) != len(columns):
                raise ContractError(where, f"has {len(row)} values but there are {len(columns)} columns {columns}.")
            row = row[prompt_column]
        if not isinstance(row, str) or not row.strip():
            raise ContractError(where, "must be a non-empty prompt string.")
        if len(row) > MAX_PROMPT_CHARS:
            raise ContractError(where, f"is {len(row)} characters long; at most {MAX_PROMPT_CHARS}.")
        prompts.append(row)
    index = payload.get("index", list(range(len(prompts))))
    if not isinstance(index, list) or len(index) != len(prompts):
        length = len(index) if isinstance(index, list) else "not a list"
        raise ContractError("input_data.index", f"must list one label per row ({len(prompts)}); got {length}.")
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ContractError("input_data.parameters", "must be an object of generation parameters.")
    unknown = sorted(set(parameters) - set(PARAMETER_RULES))
    if unknown:
        raise ContractError("input_data.parameters", f"unknown {unknown}; allowed: {', '.join(PARAMETER_RULES)}.")
    checked = {name: _check_parameter(name, value) for name, value in parameters.items()}
    return ScoringRequest(prompts=prompts, index=index, parameters=checked)


def encode_png(image: Image.Image) -> str:
    """A PIL image as a base64 string of its PNG file."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(data: str) -> Image.Image:
    """A base64 image string (as in ``generated_image``) as an RGB PIL image."""
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def build_response(prompts: list[str], images: list[Image.Image], nsfw: list[bool | None]) -> list[dict[str, Any]]:
    """The response contract: one ``{"prompt", "generated_image", "nsfw_content_detected"}`` per row, in order."""
    return [
        {"prompt": prompt, "generated_image": encode_png(image), "nsfw_content_detected": flagged}
        for prompt, image, flagged in zip(prompts, images, nsfw, strict=True)
    ]
