"""The notifier's Prometheus metrics and its readiness probe.

Served with the worker's :class:`app.metrics.HealthServer` on
``MASTERY_METRICS_PORT`` (unset: not served): ``GET /metrics``, ``/healthz``
(the loop answers) and ``/readyz`` (200 while the last probe of Redis and of
the broker succeeded, at most :data:`STALE_AFTER_S` ago; 503 naming the
failing one otherwise: at once after a failed probe, or once a probe hangs).
docs/operations.md lists the metrics.

What a delivery costs is counted as it happens (one counter increment and
one histogram observation per request); what would cost a round trip (the
outboxes' lengths, the consumer's lag, the probes) is sampled every
:data:`SAMPLE_INTERVAL_S` by :class:`NotifierProbe`, in one Redis pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
)
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.metrics import ProcessMetrics

__all__ = [
    "OUTCOMES",
    "SAMPLE_INTERVAL_S",
    "STALE_AFTER_S",
    "NotifierMetrics",
    "NotifierProbe",
]

log = logging.getLogger(__name__)

#: How often the outboxes' lengths, the lag and the connections are sampled.
SAMPLE_INTERVAL_S = 5.0
#: A probe waits this long for Redis or the broker.
PROBE_TIMEOUT_S = 5.0
#: Not ready once the last successful probe is older than this.
STALE_AFTER_S = 3 * SAMPLE_INTERVAL_S

#: ``mastery_notifier_deliveries_total{outcome}``: one per line recorded in
#: ``GET …/deliveries``, by what it says (``outbox_full`` and
#: ``dead_lettered`` are both recorded as ``dead_lettered``; a redelivery's
#: attempt as ``delivered`` or ``failed``).
OUTCOMES = (
    "delivered",
    "failed",
    "dead_lettered",
    "outbox_full",
    "redelivered",
    "redelivery_failed",
)

_REQUEST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class NotifierMetrics(ProcessMetrics):
    """The notifier's metrics."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        deliveries = Counter(
            "mastery_notifier_deliveries",
            "recorded delivery outcomes (attempts, dead letters, refusals)",
            ["outcome"],
            registry=r,
        )
        # Bound once: a delivery's increment is no label lookup.
        self.outcome = {name: deliveries.labels(name) for name in OUTCOMES}
        self.request_seconds = Histogram(
            "mastery_notifier_request_seconds",
            "one webhook request, until its answer or its failure",
            buckets=_REQUEST,
            registry=r,
        )
        self.changes = Counter(
            "mastery_notifier_changes",
            "status-change records taken in from the topic",
            registry=r,
        )
        self.appends = Counter(
            "mastery_notifier_appends",
            "status changes appended to a subscription's outbox",
            registry=r,
        )
        self.undecodable = Counter(
            "mastery_notifier_undecodable",
            "status-change records skipped as undecodable",
            registry=r,
        )
        self.held = Gauge(
            "mastery_notifier_subscriptions_held",
            "subscriptions whose lease this process holds",
            registry=r,
        )
        self.outbox_entries = Gauge(
            "mastery_notifier_outbox_entries",
            "changes waiting in the outboxes this process holds (sampled)",
            registry=r,
        )
        self.outbox_longest = Gauge(
            "mastery_notifier_outbox_longest_entries",
            "the longest outbox this process holds (sampled)",
            registry=r,
        )
        self.outbox_max = Gauge(
            "mastery_notifier_outbox_max_entries",
            "the bound of one outbox (MASTERY_NOTIFIER_OUTBOX_MAX)",
            registry=r,
        )
        self.lag = Gauge(
            "mastery_notifier_consumer_lag",
            "status-change records after the intake's position (sampled)",
            ["partition"],
            registry=r,
        )


class NotifierProbe:
    """Samples what a delivery does not count (the held outboxes' lengths,
    the intake's lag) and whether Redis and the broker answer; its
    :meth:`ready` is the ``/readyz`` check."""

    def __init__(
        self,
        metrics: NotifierMetrics,
        redis: Redis,
        outboxes: Callable[[], list[str]],
        consumer: Callable[[], AIOKafkaConsumer | None],
        *,
        interval_s: float = SAMPLE_INTERVAL_S,
    ) -> None:
        self._metrics = metrics
        self._redis = redis
        self._outboxes = outboxes
        self._consumer = consumer
        self._interval_s = interval_s
        # monotonic time of the last success; the last probe's failure
        # (None when it succeeded)
        self._redis_ok: float | None = None
        self._redis_error: str | None = "not reached yet"
        self._broker_ok: float | None = None
        self._broker_error: str | None = "not reached yet"

    async def run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self._interval_s)

    async def sample(self) -> None:
        """One probe of each side; a failure is remembered, never raised."""
        await asyncio.gather(self._sample_redis(), self._sample_broker())

    async def _sample_redis(self) -> None:
        outboxes = self._outboxes()
        pipe = self._redis.pipeline(transaction=False)
        pipe.ping()
        for key in outboxes:
            pipe.xlen(key)
        try:
            answers: list[Any] = await asyncio.wait_for(pipe.execute(), PROBE_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_error = f"{type(exc).__name__}: {exc}"
            return
        lengths = [int(n) for n in answers[1:]]
        self._metrics.outbox_entries.set(sum(lengths))
        self._metrics.outbox_longest.set(max(lengths, default=0))
        self._redis_ok, self._redis_error = time.monotonic(), None

    async def _sample_broker(self) -> None:
        consumer = self._consumer()
        if consumer is None:
            self._broker_error = "the intake's consumer has not started"
            return
        try:
            lag = await asyncio.wait_for(_lag(consumer), PROBE_TIMEOUT_S)
        except (KafkaError, OSError, TimeoutError) as exc:
            self._broker_error = f"{type(exc).__name__}: {exc}"
            return
        self._metrics.lag.clear()  # partitions no longer assigned go
        for partition, behind in lag.items():
            self._metrics.lag.labels(str(partition)).set(behind)
        self._broker_ok, self._broker_error = time.monotonic(), None

    def ready(self) -> str | None:
        """``None`` when ready, else which side failed and why."""
        now = time.monotonic()
        for side, ok, error in (
            ("Redis", self._redis_ok, self._redis_error),
            ("broker", self._broker_ok, self._broker_error),
        ):
            if error is not None:
                return f"{side}: {error}"
            if ok is None or now - ok > STALE_AFTER_S:
                return f"{side}: no answer for {STALE_AFTER_S:.0f} s"
        return None


async def _lag(consumer: AIOKafkaConsumer) -> dict[int, int]:
    """Per assigned partition: records after the consumer's position. A
    metadata request first, so that a notifier without partitions (more
    replicas than partitions) still finds out whether the broker answers."""
    await consumer.topics()
    lag: dict[int, int] = {}
    for tp in consumer.assignment():
        high = consumer.highwater(tp)  # from the last fetch; None before one
        if high is not None:
            lag[tp.partition] = max(0, high - await consumer.position(tp))
    return lag
