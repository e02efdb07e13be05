"""One settings object for the online endpoint: the scoring service, ``nbhelpers serve`` and the deployment.

:class:`EndpointSettings` is written once and read everywhere:

- ``nbhelpers serve`` builds its command line from it (``transformers.HfArgumentParser``, see
  :mod:`nbhelpers.endpoints.serving`) and hands it to the scoring worker as ``NBHELPERS_*`` environment
  variables (:meth:`EndpointSettings.to_environment`);
- the scoring script reads them back (:meth:`EndpointSettings.from_environment`), locally and in Azure;
- :mod:`nbhelpers.endpoints.azure_deploy` puts the same variables on the deployment and turns
  ``request_timeout_ms`` / ``max_concurrent_requests_per_instance`` into Azure's ``request_settings``
  (:meth:`EndpointSettings.request_settings`), so the local rehearsal and the managed endpoint enforce the same
  limits.

===============================================  =================================================================
``NBHELPERS_MODEL``                              catalog name, hub id or folder (a pipeline folder in
                                                 ``AZUREML_MODEL_DIR``, the deployment's registered model, wins)
``NBHELPERS_STAND_IN``                           ``toy`` (trained "shapes" model, 64 px) or ``tiny`` (random
                                                 weights) for an offline stand-in; ``none``: the real model
``NBHELPERS_MAX_ROWS``                           prompts per request (more get 413)
``NBHELPERS_MAX_CONCURRENT_REQUESTS_PER_INSTANCE``  generations at once; as on Azure, up to twice as many
                                                 requests may be in flight, the rest get 429
``NBHELPERS_REQUEST_TIMEOUT_MS``                 a request still running after this gets 408 and its
                                                 generation is stopped
``NBHELPERS_API_KEY``                            when set, requests need ``Authorization: Bearer <key>``; never
                                                 a command-line argument (``nbhelpers serve --api_key_file``);
                                                 printable ASCII without spaces (see :func:`read_api_key`)
===============================================  =================================================================

Azure ML documents ``request_timeout_ms`` (default 5000 ms; text-to-image needs far more, its samples use 90 s)
and ``max_concurrent_requests_per_instance`` (default 1) in the online deployment's ``request_settings``:
https://learn.microsoft.com/azure/machine-learning/reference-yaml-deployment-managed-online
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbhelpers.checks import parse_number, whole_number
from nbhelpers.endpoints.contract import DEFAULT_MAX_ROWS
from nbhelpers.errors import ConfigurationError
from nbhelpers.stand_in import STAND_IN_FIELD_METADATA, resolve_stand_in

API_KEY_VARIABLE = "NBHELPERS_API_KEY"
#: Most generations at once: each is a view of the pipeline (its own scheduler and tokenizer) and two worker
#: threads, and the gateway keeps a connection for each of twice as many requests in flight plus the liveness
#: probe within its 64 by default. A value like 100000 would copy the pipeline for ever and never be ready.
MAX_CONCURRENT_REQUESTS = 16


def environment_variable(name: str) -> str:
    """The variable of setting ``name``: ``NBHELPERS_`` + its name in capitals."""
    return f"NBHELPERS_{name.upper()}"


def _setting(default: Any, help: str) -> Any:  # noqa: A002 - HfArgumentParser passes metadata to add_argument
    """A dataclass field with the help ``nbhelpers serve --help`` shows."""
    return field(default=default, metadata={"help": help})


@dataclass
class EndpointSettings:
    """What the scoring service needs; field ``x`` is the environment variable ``NBHELPERS_X``.

    The API key is deliberately not a field (so never a command-line flag nor part of ``repr``): it is read
    from ``NBHELPERS_API_KEY`` or a key file, see :func:`read_api_key`.
    """

    model: str = _setting("deci-v1", "Catalog name, hub id or local pipeline folder.")
    stand_in: str | None = field(default=None, metadata=STAND_IN_FIELD_METADATA)
    max_rows: int = _setting(DEFAULT_MAX_ROWS, "Prompts per request; more get 413.")
    max_concurrent_requests_per_instance: int = _setting(
        1,
        "Generations at once (each with its own scheduler). As on Azure ML, at most twice this many requests "
        "are in flight; the rest get 429 with Retry-After.",
    )
    request_timeout_ms: int = _setting(
        90_000,
        "A request still running after this many ms gets 408 and its generation is stopped (Azure's "
        "request_settings.request_timeout_ms).",
    )

    def __post_init__(self) -> None:
        # Resolved once, here: the worker process gets the value itself, whatever its own environment says.
        self.stand_in = resolve_stand_in(self.stand_in)
        self.max_rows = whole_number("max_rows", self.max_rows, 1)
        self.max_concurrent_requests_per_instance = whole_number(
            "max_concurrent_requests_per_instance",
            self.max_concurrent_requests_per_instance,
            1,
            MAX_CONCURRENT_REQUESTS,
            unit="generations at once on one instance",
        )
        self.request_timeout_ms = whole_number("request_timeout_ms", self.request_timeout_ms, 1, unit="ms")

    @property
    def max_in_flight(self) -> int:
        """Requests admitted at once (running or waiting for a generation slot); Azure's ``2 x`` rule."""
        return 2 * self.max_concurrent_requests_per_instance

    def to_environment(self) -> dict[str, str]:
        """The ``NBHELPERS_*`` variables for these settings (booleans as ``1``/``0``, the real model as ``none``)."""
        variables = {}
        for item in dataclasses.fields(EndpointSettings):
            value = getattr(self, item.name)
            if value is None:
                value = "none"
            variables[environment_variable(item.name)] = str(int(value)) if isinstance(value, bool) else str(value)
        return variables

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> EndpointSettings:
        """Settings from ``NBHELPERS_*`` variables (missing ones take the defaults).

        Raises:
            ConfigurationError: naming the variable whose value is not a number, or the setting out of range.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        hints = typing.get_type_hints(EndpointSettings)
        for item in dataclasses.fields(EndpointSettings):
            variable = environment_variable(item.name)
            raw = environ.get(variable)
            if raw is None or raw == "":
                continue
            kind = hints[item.name]
            if kind is bool:
                values[item.name] = raw.strip().lower() in ("1", "true", "yes")
            elif kind in (int, float):  # the range (and a whole number for an int) is checked in __post_init__
                values[item.name] = parse_number(variable, raw)
            else:  # text, or an optional text setting (the stand-in): checked in __post_init__
                values[item.name] = raw
        return cls(**values)

    def request_settings(self) -> Any:
        """These limits as azure-ai-ml's ``OnlineRequestSettings`` for a ``ManagedOnlineDeployment``."""
        # Lazy: azure-ai-ml is the optional [azure] extra, and the gateway imports this module.
        from azure.ai.ml.entities import OnlineRequestSettings

        return OnlineRequestSettings(
            request_timeout_ms=self.request_timeout_ms,
            max_concurrent_requests_per_instance=self.max_concurrent_requests_per_instance,
        )


def read_api_key(
    key_file: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The endpoint key: the first line of ``key_file`` if given, else ``NBHELPERS_API_KEY``, else ``None``.

    The first line is the key (later lines are ignored, a UTF-8 byte-order mark and surrounding spaces are
    stripped). Keys are never taken from argv, where every user of the machine can read them (``ps``).

    Raises:
        ConfigurationError: one line saying what to fix: the file cannot be read, the key is empty, or it holds a
            character no HTTP client can send (non-ASCII, a space or a control character).
    """
    environ = os.environ if environ is None else environ
    if key_file:
        try:
            text = Path(key_file).read_text(encoding="utf-8-sig")  # utf-8-sig: a leading BOM is not the key's
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigurationError(f"Cannot read the API key file {key_file}: {err}.") from None
        lines = text.splitlines()
        return check_api_key(lines[0] if lines else "", f"the first line of the API key file {key_file}")
    key = environ.get(API_KEY_VARIABLE)
    return check_api_key(key, API_KEY_VARIABLE) if key else None


def check_api_key(key: str, source: str) -> str:
    """``key`` without surrounding spaces (and a leading byte-order mark), if every HTTP client can send it.

    A key travels in the ``Authorization`` header, which carries ASCII only; a key with other characters would
    lock every client out. The message names the position of the first bad character, never the key.

    Raises:
        ConfigurationError: the key is empty or holds a character outside printable ASCII, or a space.
    """
    key = key.lstrip("\ufeff").strip()
    if not key:
        raise ConfigurationError(f"The API key ({source}) is empty: put the key on the first line.")
    for position, character in enumerate(key, start=1):
        if not "!" <= character <= "~":
            kind = "a non-ASCII character" if ord(character) > 127 else "a space or control character"
            raise ConfigurationError(
                f"The API key ({source}) holds {kind} at position {position}; HTTP headers carry printable ASCII "
                "only. Use letters, digits and -._~+/= (e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
            )
    return key
