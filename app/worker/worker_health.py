"""The worker's readiness, its metrics per batch, and the server of both
(``/readyz``, ``/metrics`` on ``MASTERY_METRICS_PORT``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from app.metrics import HealthServer, WorkerMetrics, observe_many
from processors import batch

__all__ = ["WorkerHealth"]


class WorkerHealth:
    """What ``/readyz`` answers and what each batch adds to the metrics."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        app: Any,
        topic: str,
        *,
        started: Callable[[], bool],
        assigned_partitions: Callable[[], list[int]],
    ) -> None:
        self.metrics = metrics
        self._app = app
        self._topic = topic
        self._started = started
        self._assigned = assigned_partitions
        self._redis_writing_since: float | None = None

    @contextlib.contextmanager
    def redis_write(self) -> Iterator[None]:
        """Around a batch's Redis write: timed, and reported while retried."""
        began = time.perf_counter()
        self._redis_writing_since = time.monotonic()
        try:
            yield
        finally:
            self._redis_writing_since = None
        self.metrics.redis_write_seconds.observe(time.perf_counter() - began)

    def ready(self) -> str | None:
        """Why the worker is not ready, or None (its /readyz)."""
        if not self._started():
            return "starting: reading the catalog"
        if self._app.rebalancing or getattr(self._app, "in_recovery", False):
            return "rebalancing or recovering state"
        if not self._assigned():
            return "no partitions assigned"
        since = self._redis_writing_since
        if since is not None and time.monotonic() - since > 2.0:
            return "Redis: a write has been retried for over 2 s"
        return None

    def observe_batch(
        self,
        started: float,
        messages: Sequence[Any],
        decoded: Sequence[batch.Decoded],
        cache_entries: int,
    ) -> None:
        metrics = self.metrics
        metrics.batch_seconds.observe(time.perf_counter() - started)
        metrics.batch_events.observe(len(messages))
        metrics.cache_entries.set(cache_entries)
        now = time.time()
        by_record = metrics.freshness.labels("record")
        by_event = metrics.freshness.labels("occurred_at")
        observe_many(
            by_record, [max(0.0, now - m.timestamp) for m in messages if m.timestamp]
        )
        observe_many(
            by_event,
            [max(0.0, now - d.event.occurred_at.timestamp()) for d in decoded],
        )
        last: dict[int, int] = {}
        for m in messages:
            last[m.partition] = m.offset
        consumer = self._app.consumer
        highwater = getattr(consumer, "highwater", None)
        if highwater is None:
            return
        tps = {
            tp.partition: tp for tp in consumer.assignment() if tp.topic == self._topic
        }
        for partition, offset in last.items():
            tp = tps.get(partition)
            end = highwater(tp) if tp is not None else None
            if end is not None:
                metrics.lag.labels(str(partition)).set(max(0, end - offset - 1))

    async def serve(self, host: str, port: int) -> None:
        """Run the health server until cancelled."""
        server = HealthServer(self.metrics, self.ready, host, port)
        await server.start()
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()
