"""The worker's Prometheus metrics, and the health server it shares with the
notifier.

Served on ``MASTERY_METRICS_PORT`` (unset: not served) by a small HTTP server
on the process's own event loop: ``GET /metrics``, ``/healthz`` (the loop
answers) and ``/readyz`` (200 when ready, else 503 naming the failing
condition). docs/operations.md ("Metrics") lists every metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable

import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "HealthServer",
    "ProcessMetrics",
    "WorkerMetrics",
    "observe_many",
]

log = logging.getLogger(__name__)

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_FRESH = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def observe_many(histogram: Histogram, values: Iterable[float]) -> None:
    """Record ``values`` as one ``observe`` call each would, with one
    increment per bucket touched (a batch's per-record freshness: one
    ``observe`` per record was 3-4 % of a replaying worker's CPU, py-spy).

    prometheus_client has no bulk observe; this reads the histogram's bucket
    bounds and counters, and tests/unit/test_worker_metrics.py holds its
    exposition equal to per-value ``observe`` calls."""
    bounds: list[float] = histogram._upper_bounds
    counts = [0] * len(bounds)
    total = 0.0
    for value in values:
        # observe() counts a value in the first bucket whose bound >= it.
        counts[bisect_left(bounds, value)] += 1
        total += value
    if not any(counts):
        return
    histogram._sum.inc(total)
    buckets = histogram._buckets
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)


class ProcessMetrics:
    """A process's metrics in a registry of their own, with the process
    collector's; what :class:`HealthServer` serves at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class WorkerMetrics(ProcessMetrics):
    """The worker's metrics."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.events = Counter(
            "mastery_worker_events",
            "registration-topic records by outcome",
            ["outcome"],
            registry=r,
        )
        for outcome in ("applied", "duplicate", "redelivered", "rejected", "forwarded"):
            self.events.labels(outcome)  # present from the start, at 0
        self.dead_letters = Counter(
            "mastery_worker_dead_letters", "records dead-lettered", registry=r
        )
        self.status_changes = Counter(
            "mastery_worker_status_changes",
            "status changes sent to the status-changes topic",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "mastery_worker_batch_seconds", "batch duration", buckets=_FAST, registry=r
        )
        self.batch_events = Histogram(
            "mastery_worker_batch_events",
            "records per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "mastery_worker_commit_seconds",
            "checkpoint before an offset commit",
            buckets=_FAST,
            registry=r,
        )
        self.redis_write_seconds = Histogram(
            "mastery_worker_redis_write_seconds",
            "a batch's Redis MULTI/EXEC (retries included)",
            buckets=_FAST,
            registry=r,
        )
        self.freshness = Histogram(
            "mastery_worker_freshness_seconds",
            "record -> its row written",
            ["clock"],
            buckets=_FRESH,
            registry=r,
        )
        self.lag = Gauge(
            "mastery_worker_consumer_lag",
            "records after the last one handled",
            ["partition"],
            registry=r,
        )
        self.cache_entries = Gauge(
            "mastery_worker_state_cache_entries",
            "decoded states in memory",
            registry=r,
        )
        self.rebalances = Counter(
            "mastery_worker_rebalances", "completed rebalances", registry=r
        )
        self.heap_frozen = Gauge(
            "mastery_worker_heap_frozen_objects",
            "objects moved out of the cyclic collector's reach at the last "
            "checkpoint (app/worker/heap.py)",
            registry=r,
        )


#: A readiness check: ``None`` when ready, else why not.
ReadyCheck = Callable[[], str | None]


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` over plain HTTP/1.1."""

    def __init__(
        self,
        metrics: ProcessMetrics,
        ready: ReadyCheck,
        host: str,
        port: int,
        *,
        process: str = "worker",
    ) -> None:
        self._metrics = metrics
        self._ready = ready
        self._host = host
        self._port = port
        self._process = process
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        log.info(
            "%s metrics and health on http://%s:%d",
            self._process,
            self._host,
            self._port,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            method, _, rest = request.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            status, ctype, body = self._answer(method, path)
            writer.write(
                b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n"
                % (status.encode(), ctype.encode(), len(body))
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, method: bytes, path: bytes) -> tuple[str, str, bytes]:
        json = "application/json"
        if method != b"GET":
            return "405 Method Not Allowed", json, _error("method_not_allowed", "GET")
        if path == b"/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, self._metrics.exposition()
        if path == b"/healthz":
            return "200 OK", json, orjson.dumps({"status": "ok"})
        if path == b"/readyz":
            why = self._ready()
            if why is None:
                return "200 OK", json, orjson.dumps({"status": "ready"})
            return "503 Service Unavailable", json, _error("not_ready", why)
        return "404 Not Found", json, _error("not_found", path.decode("latin-1"))


def _error(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "details": {}}})
