"""Serve the online scoring script locally with Microsoft's ``azureml-inference-server-http``.

``nbhelpers serve --model deci-v1 --port 5001`` runs ``azmlinfsrv`` (the HTTP server inside Azure ML's
containers) on ``nbhelpers/scoring/online_score.py``: ``GET /`` answers liveness, ``POST /score`` scores.
The server runs one worker process (one copy of the model) with several threads, so liveness and
rejections (503 + ``Retry-After``) are answered while a generation runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from nbhelpers.endpoints.contract import DEFAULT_MAX_ROWS

SCORING_SCRIPT = Path(__file__).resolve().parent / "scoring" / "online_score.py"


def server_command(port: int) -> list[str]:
    """The ``azmlinfsrv`` command line for the online scoring script on ``port``."""
    return [sys.executable, "-m", "azureml_inference_server_http", "--entry_script", str(SCORING_SCRIPT),
            "--port", str(port)]


def server_environment(
    model: str,
    *,
    tiny: bool = False,
    api_key: str | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_concurrency: int = 1,
    threads: int = 8,
    queue_timeout_s: float = 0.5,
) -> dict[str, str]:
    """Environment variables that configure the scoring script (see :mod:`nbhelpers.endpoints.scoring_service`)."""
    env = {
        **os.environ,
        "NBHELPERS_MODEL": str(model),
        "NBHELPERS_TINY": "1" if tiny else os.environ.get("NBHELPERS_TINY", "0"),
        "NBHELPERS_MAX_ROWS": str(max_rows),
        "NBHELPERS_MAX_CONCURRENCY": str(max_concurrency),
        "NBHELPERS_QUEUE_TIMEOUT": str(queue_timeout_s),
        # gunicorn switches its sync worker to threads: one model in memory, concurrent liveness and 503s.
        "GUNICORN_CMD_ARGS": f"--threads {threads}",
    }
    env.pop("NBHELPERS_API_KEY", None)
    if api_key:
        env["NBHELPERS_API_KEY"] = api_key
    return env


def wait_until_live(url: str, timeout_s: float = 180.0, process: subprocess.Popen | None = None) -> None:
    """Poll ``GET url`` until it answers 200; raise ``RuntimeError`` on timeout or if ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"The server exited with status {process.returncode} before becoming live.")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"The server at {url} did not become live within {timeout_s:.0f} s.")


class LocalServer:
    """The scoring server in a subprocess: ``start()`` waits until it is live, ``stop()`` ends it.

    Also a context manager (``with local_server(...) as url:``); stopping terminates, then kills after 20 s.
    """

    def __init__(self, model: str, *, port: int, tiny: bool = False,
                 log_file: str | os.PathLike[str] | None = None, **settings: object) -> None:
        self.model = model
        self.port = port
        self.tiny = tiny
        self.log_file = log_file
        self.settings = settings
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        self._log: object = None

    def start(self, timeout_s: float = 180.0) -> str:
        """Start the server and return its base URL once ``GET /`` answers."""
        self._log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(server_command(self.port),
                                        env=server_environment(self.model, tiny=self.tiny, **self.settings),
                                        stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_until_live(self.url + "/", timeout_s=timeout_s, process=self.process)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """Stop the server (no-op if it is not running)."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._log = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def local_server(model: str, *, port: int, tiny: bool = False, log_file: str | os.PathLike[str] | None = None,
                 **settings: object) -> LocalServer:
    """A :class:`LocalServer` for ``model`` on ``port`` (use it in a ``with`` block, or start()/stop())."""
    return LocalServer(model, port=port, tiny=tiny, log_file=log_file, **settings)


def _run_serve(args: argparse.Namespace) -> int:
    env = server_environment(args.model, tiny=args.tiny, api_key=args.api_key, max_rows=args.max_rows,
                             max_concurrency=args.max_concurrency, threads=args.threads)
    print(f"Serving {args.model}{' (tiny)' if args.tiny else ''} on http://127.0.0.1:{args.port} "
          f"(GET / liveness, POST /score). Ctrl+C stops.", flush=True)
    return subprocess.call(server_command(args.port), env=env)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nbhelpers serve``."""
    serve = subparsers.add_parser("serve", help="Serve the online endpoint contract locally (azmlinfsrv).")
    serve.add_argument("--model", default="deci-v1", help="Catalog name, hub id or folder.")
    serve.add_argument("--tiny", action="store_true", help="Serve the offline tiny model.")
    serve.add_argument("--port", type=int, default=5001)
    serve.add_argument("--api-key", default=None, help="Require 'Authorization: Bearer <key>'.")
    serve.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="Prompts per request.")
    serve.add_argument("--max-concurrency", type=int, default=1, help="Generations at once; more get 503.")
    serve.add_argument("--threads", type=int, default=8, help="Server threads (requests in flight).")
    serve.set_defaults(handler=_run_serve)
