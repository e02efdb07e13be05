"""The gateway's own limits, in process (no model, no worker): what a flood of idle connections gets."""

from __future__ import annotations

import asyncio
import json

from nbhelpers.endpoints.gateway import Gateway, GatewayLimits
from nbhelpers.endpoints.settings import EndpointSettings


async def _status_line_and_body(port: int, request: bytes) -> tuple[str, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), {**json.loads(body or b"{}"), "_head": head.decode()}


def test_connections_beyond_max_connections_get_503_with_retry_after_and_the_slots_come_back(tmp_path):
    async def scenario() -> None:
        limits = GatewayLimits(max_connections=2, header_timeout_s=20)
        gateway = Gateway(
            str(tmp_path / "no-worker.sock"), EndpointSettings(model="deci-v1", stand_in="tiny"), limits=limits
        )
        port = await gateway.start("127.0.0.1", 0)
        try:
            # Two clients open a connection and send nothing: they hold both slots.
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            while gateway.connections < 2:
                await asyncio.sleep(0.01)
            status, body = await _status_line_and_body(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == "HTTP/1.1 503 Service Unavailable"
            assert "too many open connections" in body["error"]["message"] and "Retry-After: 1" in body["_head"]
            for _, writer in idle:
                writer.close()
            while gateway.connections > 0:
                await asyncio.sleep(0.01)
            # The slots are free again: the next request is answered on its merits (no worker here: 503 saying
            # the worker is starting, not "too many connections").
            status, body = await _status_line_and_body(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert "too many open connections" not in body["error"]["message"]
        finally:
            await gateway.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
