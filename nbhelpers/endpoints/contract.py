"""The Azure ML text-to-image JSON contract: parse and validate requests, build responses.

Request (both ``data`` layouts: a list of prompts, or rows ``[["prompt"], ...]`` in pandas "split" form)::

    {"input_data": {"columns": ["prompt"], "data": ["a photo of ..."], "index": [0],
                    "parameters": {"num_inference_steps": 50, "guidance_scale": 7.5}}}

Response: one object per row, in input order::

    [{"prompt": "...", "generated_image": "<base64 PNG>", "nsfw_content_detected": false}]

Every invalid request raises :class:`ContractError` carrying the HTTP status, the offending field and the
allowed range; ``to_json()`` is the error body the servers return. Hostile JSON is a 400 too, never a 500:
``NaN``/``Infinity`` and numbers that overflow a float (``1e400``), integers longer than
:data:`MAX_NUMBER_DIGITS` digits, nesting deeper than Python's recursion limit, and strings holding lone UTF-16
surrogates (``"\\ud800"``, which cannot be encoded as UTF-8 by the tokenizer or the PNG metadata).

Image sides must be a multiple of what the model can take (:func:`nbhelpers.generation.pipeline_size_multiple`):
8 for Stable Diffusion's UNet, 64 for DeciDiffusion's, which halves the latents three times and cannot pad odd
sizes. A side given alone is passed on as given: :func:`nbhelpers.generation.generate` fills the other from the
model's default size.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from nbhelpers.checks import MAX_PROMPT_CHARS, MAX_SEED

#: Generation parameters a request may carry, with their type and allowed range (inclusive). Azure ML's contract
#: documents only num_inference_steps and guidance_scale; the other knobs, and the tighter ranges that keep one
#: request within a managed endpoint's time and memory, are this server's own. A seed takes the library's range
#: (what torch.Generator takes), so any picture made with generate() can be asked for again here.
PARAMETER_RULES: dict[str, tuple[type, Any, Any]] = {
    "num_inference_steps": (int, 1, 150),
    "guidance_scale": (float, 0.0, 30.0),
    "guidance_rescale": (float, 0.0, 1.0),
    "seed": (int, 0, MAX_SEED),
    "height": (int, 64, 1024),
    "width": (int, 64, 1024),
    "negative_prompt": (str, None, None),
}
DEFAULT_MAX_ROWS = 4
#: What image sides must be a multiple of when the model is not known (the VAE's factor).
DEFAULT_SIZE_MULTIPLE = 8
#: Longest integer literal accepted (any valid parameter fits in 20 digits, the largest seed; 400 digits is an
#: attack).
MAX_NUMBER_DIGITS = 20


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


def _check_text(where: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ContractError(where, "holds a lone UTF-16 surrogate (e.g. \\ud800); send valid Unicode text.") from None


def _check_parameter(name: str, value: Any, multiple: int = DEFAULT_SIZE_MULTIPLE) -> Any:
    kind, low, high = PARAMETER_RULES[name]
    where = f"input_data.parameters.{name}"
    if kind is str:
        if not isinstance(value, str):
            raise ContractError(where, f"must be a string; got {type(value).__name__}.")
        if len(value) > MAX_PROMPT_CHARS:
            raise ContractError(where, f"is {len(value)} characters long; at most {MAX_PROMPT_CHARS}.")
        _check_text(where, value)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ContractError(where, f"must be a number between {low} and {high}; got {value!r}.")
    # Compare before converting: Python compares ints and floats exactly, and a range check first means no
    # huge value ever reaches float() or the pipeline (parse_json already refused non-finite numbers).
    if not low <= value <= high:
        raise ContractError(where, f"must be between {low} and {high}; got {value}.")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ContractError(where, f"must be a whole number between {low} and {high}; got {value!r}.")
    value = kind(value)
    if name in ("height", "width") and value % multiple:
        raise ContractError(
            where, f"must be a multiple of {multiple} for this model, between {low} and {high}; got {value}."
        )
    return value


def _refuse_constant(name: str) -> Any:
    raise ContractError("body", f"holds {name}; numbers must be finite.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ContractError("body", f"holds the number {text[:40]}, too large for a float; numbers must be finite.")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise ContractError("body", f"holds an integer of {len(text.lstrip('-'))} digits; at most {MAX_NUMBER_DIGITS}.")
    return int(text)


def parse_json(body: str | bytes) -> Any:
    """Decode a JSON request body, refusing what the standard decoder lets through but nothing downstream can take.

    Raises:
        ContractError: invalid JSON or UTF-8, NaN/Infinity, a float overflow, an integer of more than
            :data:`MAX_NUMBER_DIGITS` digits, or nesting too deep to decode.
    """
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ContractError("body", f"is not valid JSON ({err}).") from None
    except RecursionError:
        raise ContractError("body", "is nested too deeply; the contract needs two levels of objects.") from None


def parse_request(
    body: str | bytes | dict[str, Any], *, max_rows: int = DEFAULT_MAX_ROWS, size_multiple: int = DEFAULT_SIZE_MULTIPLE
) -> ScoringRequest:
    """Validate a request body (JSON text or an already parsed dict) and return a :class:`ScoringRequest`.

    ``size_multiple`` is what the served model needs image sides to be a multiple of
    (:func:`nbhelpers.generation.pipeline_size_multiple`).

    Raises:
        ContractError: malformed JSON, a missing or wrongly typed field, empty data, an index of the wrong
            length, an empty or non-string prompt, more than ``max_rows`` rows (413), an unknown or
            out-of-range parameter.
    """
    if isinstance(body, (str, bytes)):
        body = parse_json(body)
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
        _check_text(where, row)
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
    checked = {name: _check_parameter(name, value, size_multiple) for name, value in parameters.items()}
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
