"""The worker's health server: /readyz names why it is not ready (503)."""

from __future__ import annotations

import asyncio

import orjson

from app.devstack.embedded import free_port
from app.metrics import HealthServer, WorkerMetrics


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_readiness_follows_the_check_and_names_the_reason() -> None:
    reason: list[str | None] = ["rebalancing or recovering state"]
    metrics = WorkerMetrics()
    metrics.events.labels("applied").inc(3)
    port = free_port()
    server = HealthServer(metrics, lambda: reason[0], "127.0.0.1", port)
    await server.start()
    try:
        status, body = await _get(port, "/readyz")
        assert status == 503
        error = orjson.loads(body)["error"]
        assert error == {
            "code": "not_ready",
            "message": "rebalancing or recovering state",
            "details": {},
        }
        reason[0] = None
        assert (await _get(port, "/readyz"))[0] == 200
        assert await _get(port, "/healthz") == (200, b'{"status":"ok"}')
        status, body = await _get(port, "/metrics")
        assert status == 200
        assert b'mastery_worker_events_total{outcome="applied"} 3.0' in body
        assert (await _get(port, "/metrics", "POST"))[0] == 405
    finally:
        await server.stop()
