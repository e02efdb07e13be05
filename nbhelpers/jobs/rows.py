"""Prompts files: text, CSV or JSONL, one row per picture, with an optional per-row seed and settings.

- **text** (any suffix but ``.csv``, ``.jsonl``, ``.ndjson`` and ``.json``): one prompt per line. A ``.json`` file
  is refused with a hint: write JSON Lines.
- **CSV** (``.csv``): a header with a ``prompt`` column; optional ``seed`` and setting columns (:data:`ROW_SETTINGS`,
  also under their short names ``steps`` and ``guidance``). An empty cell in a setting column means "the job's
  default".
- **JSONL** (``.jsonl``, ``.ndjson``): one JSON object per line with a ``prompt`` key and the same optional keys.

Files are UTF-8 (a leading byte-order mark, as Excel's "CSV UTF-8" writes, is accepted). Every problem is one
:class:`RowsFileError` naming the file and the line: not UTF-8, no ``prompt`` column, two of them, a quote never
closed, a value that is not a number or is out of range, an unknown column (with the accepted names), an empty
prompt or one longer than :data:`~nbhelpers.checks.MAX_PROMPT_CHARS` characters. Blank lines at the end of a text
or JSONL file are ignored.

Two modes. ``strict=True`` (``nbhelpers generate`` and ``evaluate``) refuses all of the above before any work.
``strict=False`` (the batch endpoint's CSV contract) ignores columns it does not know (ids, notes) and keeps empty
(and over-long) prompts as rows, which then fail one by one as the endpoint's error threshold expects.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbhelpers.checks import MAX_PROMPT_CHARS, MAX_SEED, PROMPT_LIMIT, parse_number, shown, text, whole_number
from nbhelpers.errors import ConfigurationError

#: Per-row generation settings a prompts file (or a batch job's parameters) may give, and their types.
ROW_SETTINGS: dict[str, type] = {
    "num_inference_steps": int,
    "guidance_scale": float,
    "guidance_rescale": float,
    "negative_prompt": str,
    "height": int,
    "width": int,
}
#: Short names accepted for settings (the command line's flag names).
SETTING_ALIASES: dict[str, str] = {"steps": "num_inference_steps", "guidance": "guidance_scale"}
#: Columns of a prompts file besides the settings.
PROMPT_COLUMN, SEED_COLUMN = "prompt", "seed"

JSONL_SUFFIXES = (".jsonl", ".ndjson")


class RowsFileError(ConfigurationError):
    """A prompts file cannot be used; the message names the file, the line and what to change."""


@dataclass(frozen=True)
class Row:
    """One picture to make.

    Attributes:
        index: position among the file's rows (0-based); the default seed is the job's seed plus ``index``.
        prompt: the text (may be empty only when read with ``strict=False``; such a row fails when run).
        seed: the row's own seed, or ``None`` for the job's seed plus ``index``.
        settings: the row's generation settings (canonical names of :data:`ROW_SETTINGS`), overriding the job's.
        line: the line of the file the row starts on (for messages; 0 when the row did not come from a file).
        source: the file's name when image names should carry it (the batch runner), else ``""``.
    """

    index: int
    prompt: str
    seed: int | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    line: int = 0
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        """The row as plain JSON data (Ray ships rows to its actors this way)."""
        return {
            "index": self.index,
            "prompt": self.prompt,
            "seed": self.seed,
            "settings": dict(self.settings),
            "line": self.line,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Row:
        return cls(**{**data, "settings": dict(data.get("settings") or {})})


def _suggestion(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def accepted_setting_names() -> list[str]:
    """Every setting name a prompts file or a job's parameters may use (canonical names, then short ones)."""
    return [*ROW_SETTINGS, *SETTING_ALIASES]


def normalise_settings(values: Mapping[str, Any], *, ignore_unknown: bool = False) -> dict[str, Any]:
    """Settings with canonical names, typed and range-checked; ``None`` and empty strings are left out.

    Numbers may be given as text (a CSV cell): ``"20"`` and ``"20.0"`` are 20 steps.

    Raises:
        ConfigurationError: an unknown name (with the accepted ones; unless ``ignore_unknown``), a name given twice
            (long and short), a value of the wrong type or out of range (see
            :func:`nbhelpers.generation.validate_settings`).
    """
    settings: dict[str, Any] = {}
    for raw_name, value in values.items():
        name = SETTING_ALIASES.get(raw_name, raw_name)
        if name not in ROW_SETTINGS:
            if ignore_unknown:
                continue
            raise ConfigurationError(
                f"unknown setting {raw_name!r}{_suggestion(raw_name, accepted_setting_names())}; "
                f"accepted: {', '.join(accepted_setting_names())}"
            )
        if value is None or (isinstance(value, str) and not value.strip()):
            continue  # an empty cell: the job's default
        if name in settings:
            raise ConfigurationError(f"{name} is given twice (as {raw_name!r} and its other name); keep one")
        if ROW_SETTINGS[name] is str:
            if not isinstance(value, str):
                raise ConfigurationError(f"{raw_name} must be text; got {shown(value)}")
            settings[name] = value
        else:
            settings[name] = parse_number(raw_name, value)
    checked = check_settings(settings)
    return {name: checked.get(name, value) for name, value in settings.items()}


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Types and ranges of the generation settings, checked; return the numeric ones normalised (``20.0`` steps as
    ``20``, a whole-number guidance as a float).

    Raises:
        ConfigurationError: naming the setting and its range.
    """
    # Lazy: generation imports torch and diffusers, and the job core stays light (Ray's driver, the batch runner).
    from nbhelpers.generation import validate_settings

    checked = validate_settings(
        num_inference_steps=settings.get("num_inference_steps"),
        guidance_scale=settings.get("guidance_scale"),
        guidance_rescale=settings.get("guidance_rescale"),
        height=settings.get("height"),
        width=settings.get("width"),
        num_images=1,
    )
    return {name: checked[name] for name in settings if checked.get(name) is not None}


def _seed(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return whole_number("seed", parse_number("seed", value), 0, MAX_SEED)


def _decode(path: Path) -> str:
    """The file's text; a byte that is not UTF-8 is refused with its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # -sig: a leading BOM is not part of the first column's name
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise RowsFileError(
            f"{path}, line {line}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8 ('CSV UTF-8')."
        ) from None


def _drop_trailing_blank_lines(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _make_row(
    path: Path,
    line: int,
    index: int,
    values: Mapping[str, Any],
    *,
    strict: bool,
    source: str,
) -> Row:
    """A :class:`Row` from one record's values (``prompt``, ``seed``, settings), or a :class:`RowsFileError`."""
    prompt = values.get(PROMPT_COLUMN)
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        raise RowsFileError(f"{path}, line {line}: the prompt must be text; got {prompt!r}.")
    if strict and not prompt.strip():
        raise RowsFileError(f"{path}, line {line}: empty prompt; write one or delete the row.")
    others = {k: v for k, v in values.items() if k not in (PROMPT_COLUMN, SEED_COLUMN)}
    try:
        if strict:  # the batch contract (not strict) lets an over-long prompt fail as its row, as an empty one does
            text("the prompt", prompt, max_chars=MAX_PROMPT_CHARS, why=PROMPT_LIMIT)
        seed = _seed(values.get(SEED_COLUMN))
        settings = normalise_settings(others, ignore_unknown=not strict)
    except ValueError as err:  # ConfigurationError, and any ValueError of the checks
        raise RowsFileError(f"{path}, line {line}: {str(err).rstrip('.')}.") from None
    return Row(index=index, prompt=prompt, seed=seed, settings=settings, line=line, source=source)


def _text_rows(path: Path, text: str, *, strict: bool, source: str) -> list[Row]:
    rows: list[Row] = []
    for number, line in enumerate(_drop_trailing_blank_lines(text.splitlines()), start=1):
        rows.append(_make_row(path, number, len(rows), {PROMPT_COLUMN: line.strip()}, strict=strict, source=source))
    return rows


def _jsonl_rows(path: Path, text: str, *, strict: bool, source: str) -> list[Row]:
    rows: list[Row] = []
    for number, line in enumerate(_drop_trailing_blank_lines(text.splitlines()), start=1):
        try:
            values = json.loads(line)
        except json.JSONDecodeError as err:
            hint = " (an empty line)" if not line.strip() else ""
            raise RowsFileError(f"{path}, line {number}: not a JSON object{hint}: {err.msg}.") from None
        if not isinstance(values, dict):
            raise RowsFileError(f"{path}, line {number}: each line must be a JSON object with a 'prompt' key.")
        if PROMPT_COLUMN not in values:
            raise RowsFileError(f"{path}, line {number}: no 'prompt' key (keys: {sorted(values)}).")
        rows.append(_make_row(path, number, len(rows), values, strict=strict, source=source))
    return rows


def _csv_columns(path: Path, header: list[str], *, strict: bool) -> list[str]:
    """The header's column names, stripped; refuses a missing, doubled or (strict) unknown column."""
    names = [name.strip() for name in header]
    if names.count(PROMPT_COLUMN) == 0:
        raise RowsFileError(f"{path}, line 1: no 'prompt' column (columns: {header}).")
    known = [PROMPT_COLUMN, SEED_COLUMN, *accepted_setting_names()]
    # Two columns of one name: csv.DictReader would silently keep the last. Others' ids may repeat when not strict.
    doubled = sorted({name for name in names if name and names.count(name) > 1 and (strict or name in known)})
    if doubled:
        raise RowsFileError(
            f"{path}, line 1: column(s) {', '.join(map(repr, doubled))} appear more than once; keep one of each."
        )
    if strict:
        for name in names:
            if name not in known:
                raise RowsFileError(
                    f"{path}, line 1: unknown column {name!r}{_suggestion(name, known)}; accepted: {', '.join(known)}."
                )
    return names


def _csv_rows(path: Path, text: str, *, strict: bool, source: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[Row] = []
    line = 1
    try:
        header = next(reader, None)
        if header is None:
            raise RowsFileError(f"{path}: empty file; the first line must name the columns, one of them 'prompt'.")
        names = _csv_columns(path, header, strict=strict)
        line = reader.line_num + 1
        for cells in reader:
            if strict and len(cells) > len(names):
                raise RowsFileError(
                    f"{path}, line {line}: {len(cells)} values but {len(names)} columns; quote values holding commas."
                )
            if strict and not any(cell.strip() for cell in cells):
                raise RowsFileError(f"{path}, line {line}: empty row; write a prompt or delete the row.")
            values = dict(zip(names, cells, strict=False))
            rows.append(_make_row(path, line, len(rows), values, strict=strict, source=source))
            line = reader.line_num + 1
    except csv.Error as err:
        hint = " (a quote opened there is never closed)" if "end of data" in str(err) else ""
        raise RowsFileError(f"{path}, line {line}: malformed CSV{hint}: {str(err).rstrip('.')}.") from None
    return rows


_READERS: dict[str, Callable[..., list[Row]]] = {".csv": _csv_rows, **dict.fromkeys(JSONL_SUFFIXES, _jsonl_rows)}


def read_rows(path: str | os.PathLike[str], *, strict: bool = True, name_images_after_file: bool = False) -> list[Row]:
    """The rows of a prompts file (text, CSV or JSONL by its suffix), in order.

    Args:
        strict: refuse unknown columns and empty prompts (see the module's notes); ``False`` for the batch
            endpoint's CSV contract.
        name_images_after_file: put the file's name in every row's :attr:`Row.source`, so image names carry it.

    Raises:
        RowsFileError: naming the file and line (``strict``: also for a file without rows).
    """
    path = Path(path)
    if not path.is_file():
        raise RowsFileError(f"Prompts file {path} does not exist (or is not a file).")
    if path.suffix.lower() == ".json":
        raise RowsFileError(f"{path}: write one JSON object per line and name the file .jsonl (JSON Lines).")
    reader = _READERS.get(path.suffix.lower(), _text_rows)
    rows = reader(path, _decode(path), strict=strict, source=path.name if name_images_after_file else "")
    if strict and not rows:
        raise RowsFileError(f"{path}: no prompts in the file.")
    return rows
