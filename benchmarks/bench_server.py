"""Load and fault runs against ``nbhelpers serve`` on loopback (tiny model by default), bounded in count and time.

Load run: ``--clients`` threads each send ``--requests`` requests (two prompts each, no client retries, so every
answer is counted as the server gave it). Every 200 is checked: two rows, prompts in request order, each image a
decodable 64x64 PNG that is not flat. Reported: counts per status code, p50/p95 latency of the 200s, throughput,
and whether ``GET /`` and a request still succeed afterwards.

Fault run: one request is started, the scoring worker (gunicorn's worker process) is killed with SIGKILL while it
generates, and the run records what that client got, what an ``EndpointClient`` with retries got for a request
sent at the same moment, and how long the server took to answer ``GET /`` with 200 again (gunicorn restarts the
worker, which reloads the model).

Flood run: ``--idle`` sockets from one peer connect and send nothing (more than ``--max_connections``); the run
records what ``GET /`` and a request then get and how fast, and how many idle sockets were told to make room.
Then two clients keep both in-flight places busy (``max_concurrent_requests_per_instance=1``) while a third
collects the ``Retry-After`` of its 429s, to compare with how long the busy clients' requests took.

    python benchmarks/bench_server.py load --clients 8 --requests 20
    python benchmarks/bench_server.py fault
    python benchmarks/bench_server.py flood --idle 200
"""

from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
import io
import os
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import requests
from PIL import Image

from nbhelpers.atomic import write_json_atomic
from nbhelpers.endpoints.client import EndpointClient, EndpointError
from nbhelpers.endpoints.serving import local_server
from nbhelpers.environment import environment_report


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def scoring_worker_pid(serve_pid: int) -> int:
    """The gunicorn worker under ``nbhelpers serve``: serve -> gunicorn arbiter -> worker."""
    (arbiter,) = _children(serve_pid)
    (worker,) = _children(arbiter)
    return worker


def check_rows(rows: object, prompts: list[str]) -> str | None:
    """``None`` if ``rows`` is the contract's answer for ``prompts`` (in order, real images), else what is wrong."""
    if not isinstance(rows, list) or [r.get("prompt") for r in rows] != prompts:
        return "prompts missing or out of order"
    for row in rows:
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(row["generated_image"]))).convert("RGB"))
        if image.shape != (64, 64, 3) or image.std() == 0:
            return f"bad image {image.shape}"
    return None


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    return sorted_values[max(0, round(fraction * len(sorted_values)) - 1)] if sorted_values else None


def load_run(args: argparse.Namespace) -> dict:
    deadline = time.monotonic() + args.max_seconds
    with local_server(
        args.model,
        stand_in="none" if args.real else "tiny",
        max_concurrent_requests_per_instance=args.concurrency,
        request_timeout_ms=args.request_timeout_ms,
    ) as url:
        warm = {"input_data": {"data": ["warm-up"], "parameters": {"num_inference_steps": 1}}}
        requests.post(url + "/score", json=warm, timeout=300)

        def client(number: int) -> list[tuple[int, float, str | None]]:
            results = []
            for request in range(args.requests):
                if time.monotonic() > deadline:
                    break
                prompts = [f"client {number} request {request} row {row}" for row in range(2)]
                body = {"input_data": {"data": prompts, "parameters": {"num_inference_steps": args.steps}}}
                start = time.perf_counter()
                response = requests.post(url + "/score", json=body, timeout=300)
                seconds = time.perf_counter() - start
                problem = check_rows(response.json(), prompts) if response.status_code == 200 else None
                results.append((response.status_code, seconds, problem))
            return results

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            results = [r for batch in pool.map(client, range(args.clients)) for r in batch]
        wall = time.perf_counter() - start
        healthy_after = (
            requests.get(url + "/", timeout=10).status_code == 200
            and requests.post(url + "/score", json=warm, timeout=300).status_code == 200
        )
    ok = sorted(seconds for status, seconds, _ in results if status == 200)
    return {
        "run": "load",
        "model": args.model + ("" if args.real else " (tiny, random weights)"),
        "steps": args.steps,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "max_concurrent_requests_per_instance": args.concurrency,
        "request_timeout_ms": args.request_timeout_ms,
        "sent": len(results),
        "status_counts": dict(sorted(collections.Counter(str(status) for status, _, _ in results).items())),
        "ok_checked_bad": sum(problem is not None for _, _, problem in results),
        "ok_per_second": len(ok) / wall,
        "wall_seconds": wall,
        "p50_ms_ok": percentile(ok, 0.5) * 1e3 if ok else None,
        "p95_ms_ok": percentile(ok, 0.95) * 1e3 if ok else None,
        "healthy_after": healthy_after,
    }


def fault_run(args: argparse.Namespace) -> dict:
    stand_in = "none" if args.real else "tiny"
    server = local_server(args.model, stand_in=stand_in, request_timeout_ms=args.request_timeout_ms)
    url = server.start()
    try:
        body = {"input_data": {"data": ["a lighthouse at dusk"], "parameters": {"num_inference_steps": 150}}}
        outcome: dict = {}

        def plain_client() -> None:
            response = requests.post(url + "/score", json=body, timeout=300)
            outcome["plain_client_status"] = response.status_code
            outcome["plain_client_message"] = response.json().get("error", {}).get("message")

        def retrying_client() -> None:
            start = time.monotonic()
            small = {"num_inference_steps": 2}
            try:
                images = EndpointClient(url + "/score", retries=6, backoff_s=1.0).generate(["a red fox"], **small)
                outcome["retrying_client"] = f"ok, {len(images)} image(s)"
            except EndpointError as err:
                outcome["retrying_client"] = f"failed: {err}"
            outcome["retrying_client_seconds"] = time.monotonic() - start

        worker = scoring_worker_pid(server.process.pid)
        first = threading.Thread(target=plain_client)
        first.start()
        time.sleep(args.kill_after_s)  # the 150-step request is generating
        second = threading.Thread(target=retrying_client)
        second.start()
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        first.join()
        while requests.get(url + "/", timeout=10).status_code != 200:
            time.sleep(0.25)
        outcome["seconds_until_live_again"] = time.monotonic() - killed_at
        second.join()
        outcome["new_worker_pid_differs"] = scoring_worker_pid(server.process.pid) != worker
    finally:
        server.stop()
    return {
        "run": "fault",
        "model": args.model + ("" if args.real else " (tiny, random weights)"),
        "killed": "gunicorn worker (SIGKILL) mid-generation",
        **outcome,
    }


def _told_to_make_room(sock: socket.socket) -> bool:
    """Whether the gateway closed this idle socket with 408 "... make room for other clients" (not the header
    timeout's 408)."""
    sock.settimeout(0.5)
    try:
        answer = sock.recv(4096)
        return answer.startswith(b"HTTP/1.1 408") and b"make room for other clients" in answer
    except (TimeoutError, OSError):
        return False


def flood_run(args: argparse.Namespace) -> dict:
    small = {"input_data": {"data": ["a fox"], "parameters": {"num_inference_steps": 1}}}
    with local_server(
        args.model,
        stand_in="none" if args.real else "tiny",
        max_concurrent_requests_per_instance=1,
        request_timeout_ms=args.request_timeout_ms,
        max_connections=args.max_connections,
        header_timeout_s=60,
    ) as url:
        address = urlsplit(url)
        idle = [socket.create_connection((address.hostname, address.port)) for _ in range(args.idle)]
        probes = []
        for _ in range(5):
            start = time.perf_counter()
            status = requests.get(url + "/", timeout=30).status_code
            probes.append((status, (time.perf_counter() - start) * 1e3))
        start = time.perf_counter()
        scored = requests.post(url + "/score", json=small, timeout=300).status_code
        scored_ms = (time.perf_counter() - start) * 1e3
        told = sum(_told_to_make_room(sock) for sock in idle)
        for sock in idle:
            sock.close()

        busy_body = {"input_data": {"data": ["an owl"], "parameters": {"num_inference_steps": args.steps}}}
        stop = threading.Event()
        latencies: list[float] = []
        finished: list[float] = []  # when each busy request was answered: a place had just freed

        def busy() -> None:
            while not stop.is_set():
                start = time.perf_counter()
                if requests.post(url + "/score", json=busy_body, timeout=300).status_code == 200:
                    finished.append(time.perf_counter())
                    latencies.append(finished[-1] - start)

        workers = [threading.Thread(target=busy) for _ in range(2)]
        for worker in workers:
            worker.start()
        while len(latencies) < 4:  # the gateway has learnt a few hold times
            time.sleep(0.1)
        retry_after: list[tuple[float, int]] = []  # (when, Retry-After)
        for _ in range(args.samples):
            response = requests.post(url + "/score", json=small, timeout=300)
            if response.status_code == 429:
                retry_after.append((time.perf_counter(), int(response.headers["Retry-After"])))
            time.sleep(0.3)
        stop.set()
        for worker in workers:
            worker.join()
    # How long each 429's client would really have waited for a place to free, against what it was told.
    waits = [(min(t for t in finished if t > when) - when, told) for when, told in retry_after if finished[-1] > when]
    return {
        "run": "flood",
        "model": args.model + ("" if args.real else " (tiny, random weights)"),
        "idle_sockets": args.idle,
        "max_connections": args.max_connections,
        "probe_status": [status for status, _ in probes],
        "probe_ms_max": max(ms for _, ms in probes),
        "score_status_during_flood": scored,
        "score_ms_during_flood": scored_ms,
        "idle_sockets_told_408": told,
        "busy_steps": args.steps,
        "busy_request_seconds_p50": statistics.median(latencies),
        "busy_request_seconds_max": max(latencies),
        "retry_after_samples": len(waits),
        "retry_after_s_median": statistics.median(told for _, told in waits) if waits else None,
        "wait_until_a_place_freed_s_median": statistics.median(wait for wait, _ in waits) if waits else None,
        # Median of |told - real wait|, and the same for the old constant Retry-After: 1.
        "retry_after_error_s_median": statistics.median(abs(told - wait) for wait, told in waits) if waits else None,
        "constant_1s_error_s_median": statistics.median(abs(1 - wait) for wait, _ in waits) if waits else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", choices=["load", "fault", "flood"])
    parser.add_argument("--model", default="deci-v1")
    parser.add_argument("--real", action="store_true", help="serve the real model instead of the tiny one")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2, help="max_concurrent_requests_per_instance")
    parser.add_argument("--request_timeout_ms", type=int, default=60_000)
    parser.add_argument("--kill_after_s", type=float, default=2.0)
    parser.add_argument("--max_seconds", type=float, default=600, help="stop sending after this long")
    parser.add_argument("--idle", type=int, default=200, help="flood: idle sockets from one peer")
    parser.add_argument("--max_connections", type=int, default=64, help="flood: the gateway's connection limit")
    parser.add_argument("--samples", type=int, default=20, help="flood: requests sent to collect Retry-After")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/server-<run>.json")
    args = parser.parse_args()
    figures = {"load": load_run, "fault": fault_run, "flood": flood_run}[args.run](args)
    figures["command"] = "python benchmarks/bench_server.py " + " ".join(sys.argv[1:])
    figures["environment"] = environment_report().as_dict()
    print({k: v for k, v in figures.items() if k != "environment"})
    write_json_atomic(args.out or f"benchmarks/results/server-{args.run}.json", figures)


if __name__ == "__main__":
    main()
