"""``nbhelpers serve``: the online scoring script behind a gateway that answers like an Azure ML managed endpoint.

Two processes, one command::

    client --HTTP--> gateway (this process, asyncio, 127.0.0.1:PORT)  --Unix socket-->  scoring worker
                     auth, limits, timeouts, 429/408/424                                    Microsoft's azmlinfsrv app
                     (nbhelpers.endpoints.gateway)                                           on online_score.py

The worker is Microsoft's ``azureml-inference-server-http`` Flask app (the one inside Azure ML's containers)
under gunicorn, exactly what ``azmlinfsrv`` starts on Linux, except for where it listens: ``azmlinfsrv`` always
binds ``0.0.0.0`` (its host is a constant, not an option), so this module starts gunicorn on the same WSGI app
with ``--bind unix:<private folder>/worker.sock``, reachable only through the gateway. The gthread worker has
``2 x max_concurrent_requests_per_instance + 2`` threads: every admitted request and a liveness probe.

The command line is generated from the dataclasses it fills (:class:`ServeArguments`, which extends
:class:`~nbhelpers.endpoints.settings.EndpointSettings`, and :class:`~nbhelpers.endpoints.gateway.GatewayLimits`)
with ``transformers.HfArgumentParser``: flag names are the field names (``--max_rows``; the dashed spelling
``--max-rows`` works too), defaults and help are written once, on the fields. :func:`build_serve_parser` makes it,
for ``nbhelpers serve`` and for this module's own entry point, ``python -m nbhelpers.endpoints.serving ARGS``: what
:class:`LocalServer` starts, importing only what serving needs, so the gateway process stays free of torch (the
model lives in the scoring worker it starts).

Everything that can be checked is checked before the worker starts, each with one line saying what to pass:
the settings and limits (their dataclasses' ``__post_init__`` and :meth:`GatewayLimits.check_room_for`), the key
(:func:`~nbhelpers.endpoints.settings.read_api_key`) and the address, by binding it (:func:`listening_socket`).
The worker's own header limits are set no tighter than the gateway's (:func:`worker_command`), so a request the
gateway accepts never meets gunicorn's HTML 400/431.

SIGTERM and Ctrl-C drain the gateway (the requests in flight finish within ``--drain_timeout_s`` or get 503; a
second Ctrl-C ends the wait), then stop the whole worker process group; the worker also receives SIGTERM if this
process dies (Linux ``PR_SET_PDEATHSIG``), so nothing is left answering. The worker's socket folder is named
after this process; one left behind by a killed server (``kill -9``) is removed by the next start
(:func:`remove_stale_socket_folders`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import errno
import ipaddress
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from nbhelpers.arguments import dataclass_flags, run_handler, settings_from_args
from nbhelpers.endpoints.gateway import Gateway, GatewayLimits
from nbhelpers.endpoints.settings import API_KEY_VARIABLE, EndpointSettings, read_api_key
from nbhelpers.errors import ConfigurationError
from nbhelpers.stand_in import stand_in_mark

SCORING_SCRIPT = Path(__file__).resolve().parent / "scoring" / "online_score.py"
#: The WSGI app ``azmlinfsrv`` hands to gunicorn (azureml_inference_server_http/amlserver_linux.py).
WORKER_APP = "azureml_inference_server_http.server.entry:app"
BANNER = re.compile(r"Serving .* on (http://\S+?) ")
#: The worker socket's private folder in the temporary folder: ``nbhelpers-serve-<pid of nbhelpers serve>-<random>``.
SOCKET_FOLDER_PREFIX = "nbhelpers-serve-"
SOCKET_FOLDER = re.compile(re.escape(SOCKET_FOLDER_PREFIX) + r"(\d+)-[A-Za-z0-9_]+")


@dataclass
class ServeArguments(EndpointSettings):
    """``nbhelpers serve``'s own options, on top of the endpoint settings."""

    host: str = field(
        default="127.0.0.1",
        metadata={"help": "Interface to listen on. Only loopback unless you mean it: 0.0.0.0 exposes the endpoint."},
    )
    port: int = field(default=5001, metadata={"help": "Port (0 picks a free one; the banner prints it)."})
    api_key_file: str | None = field(
        default=None,
        metadata={
            "help": f"File whose first line is the key clients must send as 'Authorization: Bearer <key>' (or set "
            f"{API_KEY_VARIABLE}). Keys are never taken from the command line, where `ps` shows them."
        },
    )
    rehearse_gateway: bool = field(
        default=False,
        metadata={
            "help": "Answer scoring errors as the managed endpoint does: 424 with the container's code and reason in "
            "ms-azureml-model-error-statuscode / -reason headers."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_port(self.port)
        if not self.host.strip():
            raise ConfigurationError(
                "--host is empty: pass 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)."
            )

    def endpoint_settings(self) -> EndpointSettings:
        """Just the settings the scoring worker reads."""
        return EndpointSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EndpointSettings)})


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def worker_command(socket_path: str | os.PathLike[str], settings: EndpointSettings) -> list[str]:
    """The gunicorn command line that runs the azmlinfsrv app on ``online_score.py`` behind the gateway.

    gunicorn's header limits (a 4094-byte request line, 100 fields of 8190 bytes) are tighter than the gateway's
    (:attr:`GatewayLimits.max_header_bytes` for the whole head), and gunicorn answers them with an HTML 400/431
    that the rehearsed gateway would even call a model error (424). They are raised so that any head the gateway
    forwards fits: a field as long as the gateway's whole head, as many fields as can fit in it (4 bytes each at
    least, ``a:\\r\\n``), and no request-line limit (the gateway forwards ``POST /score`` only).
    """
    head = GatewayLimits.max_header_bytes
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"unix:{socket_path}",
        "--workers",
        "1",
        "--worker-class",
        "gthread",
        "--threads",
        str(settings.max_in_flight + 2),
        "--timeout",
        "300",
        "--graceful-timeout",
        "5",
        "--limit-request-line",
        "0",
        "--limit-request-fields",
        str(head // 4),
        "--limit-request-field_size",
        str(head + 2),
        "--access-logfile",
        "-",
        WORKER_APP,
    ]


def worker_environment(settings: EndpointSettings, api_key: str | None) -> dict[str, str]:
    """The worker's environment: ours, minus gunicorn overrides, plus the settings and azmlinfsrv's variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("GUNICORN_CMD_ARGS", API_KEY_VARIABLE)}
    env |= settings.to_environment()
    env |= {
        "AZUREML_ENTRY_SCRIPT": str(SCORING_SCRIPT),
        "AML_APP_ROOT": str(SCORING_SCRIPT.parent),
        "SERVICE_NAME": "nbhelpers-text-to-image",
    }
    if api_key:
        env[API_KEY_VARIABLE] = api_key
    return env


def start_worker(
    socket_path: str | os.PathLike[str], settings: EndpointSettings, api_key: str | None
) -> subprocess.Popen:
    """Start the scoring worker in its own process group (so stopping it stops its gunicorn worker too)."""
    return subprocess.Popen(
        worker_command(socket_path, settings),
        env=worker_environment(settings, api_key),
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def stop_process_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group of ``process``; SIGKILL it after ``grace_s`` seconds."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def check_port(port: int) -> None:
    """Refuse a port outside 0-65535 (0 picks a free one).

    Raises:
        ConfigurationError: naming ``--port`` and the range.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigurationError(f"--port must be between 0 and 65535 (0 picks a free port); got {port}.")


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, or one line saying what to pass instead.

    Bound before the worker starts, so a bad address costs nothing and no traceback: an address that is not an
    IP literal nor a name of this machine, one this machine does not have, a port in use or one that needs
    privileges.

    Raises:
        ConfigurationError: what is wrong with ``--host`` or ``--port`` and what to pass.
    """
    check_port(port)
    if re.fullmatch(r"[0-9.]+|.*:.*", host):  # written as an address: parse it, do not ask DNS about it
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigurationError(
                f"--host {host} is not an IP address: pass 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)."
            ) from None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise ConfigurationError(
            f"--host {host} is not an address or name of this machine ({err.strerror}): pass 127.0.0.1 or 0.0.0.0."
        ) from None
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as err:
        listener.close()
        reasons: dict[int | None, str] = {
            errno.EADDRINUSE: f"port {port} is in use: pass another --port (0 picks a free one)",
            errno.EACCES: f"port {port} needs privileges: pass --port 1024 or above",
            errno.EADDRNOTAVAIL: f"--host {host} is not an address of this machine: pass 127.0.0.1 or 0.0.0.0",
        }
        reason = reasons.get(err.errno, err.strerror or str(err))
        raise ConfigurationError(f"Cannot listen on {host}:{port}: {reason}.") from None
    listener.setblocking(False)
    return listener


def remove_stale_socket_folders(folder: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the worker-socket folders of servers that are gone (killed with SIGKILL, which no cleanup survives).

    Only folders of this user named ``nbhelpers-serve-<pid>-...`` whose process no longer exists are removed.
    Returns the removed paths.
    """
    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(SOCKET_FOLDER_PREFIX + "*"):
        match = SOCKET_FOLDER.fullmatch(path.name)
        try:
            info = path.lstat()
        except OSError:
            continue
        if not match or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or _process_exists(int(match[1])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def private_socket_folder() -> Iterator[Path]:
    """A folder only this user can enter (mode 0700) for the worker's socket, named after this process and removed
    on exit; stale ones of killed servers are removed first."""
    remove_stale_socket_folders()
    with tempfile.TemporaryDirectory(prefix=f"{SOCKET_FOLDER_PREFIX}{os.getpid()}-") as folder:
        yield Path(folder)


def check_serve_arguments(args: ServeArguments, limits: GatewayLimits) -> None:
    """What the dataclasses cannot check alone: the limits against the settings (see
    :meth:`GatewayLimits.check_room_for`).

    Raises:
        ConfigurationError: one line naming the flag and what to pass.
    """
    limits.check_room_for(args.endpoint_settings())


async def _serve(
    args: ServeArguments,
    limits: GatewayLimits,
    api_key: str | None,
    worker: subprocess.Popen,
    socket_path: str,
    listener: socket.socket,
) -> int:
    gateway = Gateway(
        socket_path, args.endpoint_settings(), api_key=api_key, rehearse_gateway=args.rehearse_gateway, limits=limits
    )
    port = await gateway.start(sock=listener)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        stop.set()
        if signals > 1:  # a second Ctrl-C: stop waiting for the requests in flight
            asyncio.ensure_future(gateway.drain(0))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    mark = stand_in_mark(args.stand_in)  # resolved by EndpointSettings
    model = f"{args.model} ({mark})" if mark else args.model
    print(
        f"nbhelpers: Serving {model} on http://{args.host}:{port} (GET / liveness, POST /score; "
        f"auth {'on' if api_key else 'off'}; at most {args.max_in_flight} requests in flight, "
        f"{args.request_timeout_ms} ms each). Ctrl+C stops.",
        flush=True,
    )
    while not stop.is_set() and worker.poll() is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    if stop.is_set():
        print(
            f"nbhelpers: stopping: no new connections; {gateway.answering} request(s) in flight get up to "
            f"{limits.drain_timeout_s:g} s to finish.",
            flush=True,
        )
        await gateway.drain(limits.drain_timeout_s)
        return 0
    await gateway.close()
    print(
        f"nbhelpers: the scoring worker exited with status {worker.returncode}; see the log above.",
        file=sys.stderr,
        flush=True,
    )
    return 1


def serve(args: ServeArguments, limits: GatewayLimits | None = None) -> int:
    """Run the gateway and the scoring worker until SIGTERM/Ctrl-C or until the worker dies; stop both.

    Raises:
        ConfigurationError: before anything starts, one line saying what to fix (key, limits, address).
    """
    limits = limits or GatewayLimits()
    api_key = read_api_key(args.api_key_file)
    check_serve_arguments(args, limits)
    listener = listening_socket(args.host, args.port)
    with contextlib.closing(listener), private_socket_folder() as folder:
        socket_path = str(folder / "worker.sock")
        print("nbhelpers: starting the scoring worker (azmlinfsrv app under gunicorn)", flush=True)
        worker = start_worker(socket_path, args.endpoint_settings(), api_key)
        try:
            return asyncio.run(_serve(args, limits, api_key, worker, socket_path, listener))
        finally:
            stop_process_group(worker)


# --- the command line: nbhelpers serve, and python -m nbhelpers.endpoints.serving --------------------------------

SERVE_DESCRIPTION = (
    "The online scoring script (azmlinfsrv) behind a loopback gateway that answers like an Azure ML managed "
    "endpoint: 401, 408, 413, 424, 429 with Retry-After."
)


class _RefuseKeyInArgv(argparse.Action):
    """``--api-key`` (the old flag): refused with the way to give a key instead."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(
            f"keys are not taken from the command line (every user sees it in `ps`); use --api_key_file "
            f"FILE or set {API_KEY_VARIABLE}."
        )


def serve_from_arguments(args: argparse.Namespace) -> int:
    """:func:`serve` with the settings and limits parsed by a :func:`build_serve_parser` parser."""
    return serve(settings_from_args(ServeArguments, args), settings_from_args(GatewayLimits, args))


def build_serve_parser(
    make_parser: Callable[..., argparse.ArgumentParser] = argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """The serve command's parser, made by ``make_parser`` (``argparse.ArgumentParser``, or a sub-command's
    ``add_parser``): one flag per field of :class:`ServeArguments` and :class:`GatewayLimits` (``--toy`` and
    ``--tiny`` too), the old ``--max-concurrency``, and ``--api-key`` refused. Its handler is
    :func:`serve_from_arguments`."""
    parser = make_parser(
        parents=[dataclass_flags((ServeArguments, GatewayLimits))],
        description=SERVE_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # else --api-key would silently mean --api-key-file
    )
    parser.add_argument(
        "--max-concurrency",
        dest="max_concurrent_requests_per_instance",
        type=int,
        default=argparse.SUPPRESS,
        help="Old spelling of --max_concurrent_requests_per_instance.",
    )
    parser.add_argument("--api-key", "--api_key", action=_RefuseKeyInArgv, help=argparse.SUPPRESS)
    parser.set_defaults(handler=serve_from_arguments, command="serve")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``nbhelpers serve ARGS`` as ``python -m nbhelpers.endpoints.serving ARGS``; returns the exit status."""
    parser = build_serve_parser(lambda **options: argparse.ArgumentParser(prog="nbhelpers serve", **options))
    return run_handler(parser.parse_args(argv))


# --- from Python: a server in a subprocess ---------------------------------------------------------------------


def serve_command_line(model: str, *, port: int = 0, stand_in: str | None = None, **options: Any) -> list[str]:
    """``nbhelpers serve ...`` for ``model``; ``options`` are field names of ServeArguments/GatewayLimits."""
    known = {f.name: f.default for cls in (ServeArguments, GatewayLimits) for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"Unknown server option(s) {unknown}; known: {sorted(known)}.")
    # Serving's own entry point: the parser of `nbhelpers serve`, without the command line's other commands.
    command = [sys.executable, "-m", "nbhelpers.endpoints.serving", "--model", str(model), "--port", str(port)]
    if stand_in is not None:
        command += ["--stand-in", stand_in]
    for name, value in options.items():
        if isinstance(value, bool):
            command += [f"--{name}"] if value else []
        elif value is not None:
            command += [f"--{name}", str(value)]
    return command


class LocalServer:
    """``nbhelpers serve`` in a subprocess: ``start()`` waits until it is ready, ``stop()`` ends it and its worker.

    Also a context manager (``with local_server(...) as url:``). The API key, if any, reaches the subprocess
    through its environment, never its command line.

    Args:
        model: catalog name, hub id or folder.
        port: 0 (default) lets the server pick a free port; :attr:`url` is known after :meth:`start`.
        stand_in: serve an offline stand-in (``"toy"`` or ``"tiny"``; default: ``NBHELPERS_STAND_IN``).
        api_key: the key clients must send.
        log_file: where the server's output goes (default: a temporary file, removed by :meth:`stop`).
        progress: print the start-up steps (worker start, model loading, ready) while waiting.
        options: ``nbhelpers serve`` options by field name, e.g. ``max_concurrent_requests_per_instance=2``,
            ``request_timeout_ms=5000``, ``rehearse_gateway=True``, ``header_timeout_s=2``.
    """

    def __init__(
        self,
        model: str,
        *,
        port: int = 0,
        stand_in: str | None = None,
        api_key: str | None = None,
        log_file: str | os.PathLike[str] | None = None,
        progress: bool = False,
        **options: Any,
    ) -> None:
        self.command = serve_command_line(model, port=port, stand_in=stand_in, **options)
        self.drain_timeout_s = float(options.get("drain_timeout_s", GatewayLimits.drain_timeout_s))
        self.progress = progress
        self.api_key = api_key
        self.log_file = Path(log_file) if log_file else None
        self.url: str | None = None
        self.process: subprocess.Popen | None = None
        self._temporary_log: Path | None = None

    def start(self, timeout_s: float = 300.0, progress: bool | None = None) -> str:
        """Start the server and return its base URL once ``GET /`` answers 200 (the model is loaded).

        Args:
            timeout_s: give up (and stop the server) after this many seconds.
            progress: print the server's start-up steps as they happen (default: the ``progress`` given at init).

        Raises:
            RuntimeError: the server exited or was not ready in time; the message ends with its log's tail.
        """
        if self.log_file is None:
            handle, name = tempfile.mkstemp(prefix="nbhelpers-serve-", suffix=".log")
            os.close(handle)
            self._temporary_log = self.log_file = Path(name)
        env = {k: v for k, v in os.environ.items() if k != API_KEY_VARIABLE}
        if self.api_key:
            env[API_KEY_VARIABLE] = self.api_key
        log_file = self.log_file
        with open(log_file, "ab") as log:
            self.process = process = subprocess.Popen(self.command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            return self._wait_until_ready(process, log_file, timeout_s, self.progress if progress is None else progress)
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self, process: subprocess.Popen, log_file: Path, timeout_s: float, progress: bool) -> str:
        """The server's URL once ``GET /`` answers 200; raises when ``process`` exits or the time runs out."""
        start = time.monotonic()
        shown = 0
        while time.monotonic() - start < timeout_s:
            log = log_file.read_text(encoding="utf-8", errors="replace")
            if progress:
                steps = startup_steps(log)
                for step in steps[shown:]:
                    print(f"[{time.monotonic() - start:6.1f} s] {step}", flush=True)
                shown = len(steps)
            if self.url is None and (match := BANNER.search(log)):
                self.url = match.group(1)
            if process.poll() is not None:
                raise RuntimeError(
                    f"The server exited with status {process.returncode} before it was ready. Log tail:\n{log[-3000:]}"
                )
            if self.url is not None:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(self.url + "/", timeout=5).status_code == 200:
                        if progress:
                            print(f"[{time.monotonic() - start:6.1f} s] ready at {self.url}", flush=True)
                        return self.url
            time.sleep(0.25)
        raise RuntimeError(
            f"The server was not ready within {timeout_s:.0f} s. Log tail:\n"
            f"{log_file.read_text(encoding='utf-8', errors='replace')[-3000:]}"
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM: it drains, then stops its worker; SIGKILL if it has not exited 30 s after the
        drain timeout). No-op if not running."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.drain_timeout_s + 30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self._temporary_log is not None:
            self._temporary_log.unlink(missing_ok=True)
            self._temporary_log = self.log_file = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def startup_steps(log: str) -> list[str]:
    """The start-up steps in a server log: our ``nbhelpers:`` lines and the last state of the loading bar."""
    steps = []
    for line in log.splitlines():
        if "nbhelpers: " in line:
            steps.append(line.split("nbhelpers: ", 1)[1].strip())
        elif "Loading pipeline components" in line:
            bar = line.split("\r")[-1].strip()
            if "100%" in bar:
                steps.append(bar)
    return steps


def local_server(
    model: str,
    *,
    port: int = 0,
    stand_in: str | None = None,
    api_key: str | None = None,
    log_file: str | os.PathLike[str] | None = None,
    progress: bool = False,
    **options: Any,
) -> LocalServer:
    """A :class:`LocalServer` for ``model`` (use it in a ``with`` block, or start()/stop())."""
    return LocalServer(
        model, port=port, stand_in=stand_in, api_key=api_key, log_file=log_file, progress=progress, **options
    )


if __name__ == "__main__":
    sys.exit(main())
