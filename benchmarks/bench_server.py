"""Requests per second and p50/p95 latency of the local scoring server (tiny model by default).

Starts ``nbhelpers serve`` on a free loopback port, sends a bounded number of requests from a few client
threads (the contract's request, one prompt each), and prints and saves the figures. Rejected requests (503)
are counted apart: with one generation slot, more clients than slots measure admission control too.

    python benchmarks/bench_server.py --requests 40 --clients 1
    python benchmarks/bench_server.py --requests 40 --clients 4
"""

from __future__ import annotations

import argparse
import concurrent.futures
import socket
import statistics
import time

import requests

from nbhelpers.atomic import write_json_atomic
from nbhelpers.endpoints.serving import local_server
from nbhelpers.environment import environment_report


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deci-v1")
    parser.add_argument("--real", action="store_true", help="serve the real model instead of the tiny one")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/results/server.json")
    args = parser.parse_args()
    body = {"input_data": {"data": ["a photograph of an astronaut riding a horse"],
                           "parameters": {"num_inference_steps": args.steps}}}
    with local_server(args.model, port=free_port(), tiny=not args.real) as url:
        requests.post(url + "/score", json=body, timeout=600)  # warm-up

        def call(_: int) -> tuple[int, float]:
            start = time.perf_counter()
            status = requests.post(url + "/score", json=body, timeout=600).status_code
            return status, time.perf_counter() - start

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(call, range(args.requests)))
        wall = time.perf_counter() - start
    ok = sorted(seconds for status, seconds in results if status == 200)
    figures = {
        "model": args.model + ("" if args.real else " (tiny, random weights)"),
        "steps": args.steps,
        "clients": args.clients,
        "requests": args.requests,
        "ok": len(ok),
        "rejected_503": sum(status == 503 for status, _ in results),
        "other": sum(status not in (200, 503) for status, _ in results),
        "requests_per_second_ok": len(ok) / wall,
        "p50_ms": statistics.median(ok) * 1e3 if ok else None,
        "p95_ms": ok[max(0, round(0.95 * len(ok)) - 1)] * 1e3 if ok else None,
        "environment": environment_report().as_dict(),
    }
    print(f"{figures['model']}, {args.clients} client(s), {args.requests} requests: {figures['ok']} ok, "
          f"{figures['rejected_503']} x 503; {figures['requests_per_second_ok']:.2f} req/s, "
          f"p50 {figures['p50_ms']:.0f} ms, p95 {figures['p95_ms']:.0f} ms")
    write_json_atomic(args.out, figures)


if __name__ == "__main__":
    main()
