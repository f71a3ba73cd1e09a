"""The API's side of a broker that lost its data, and of a missing worker.

A worker that finds the broker's log shorter than it was stores a
:class:`schemas.broker_status.BrokerLoss` in Redis and stops
(app/worker/broker_watch.py). Until an operator clears it (``mastery
broker-reset``, docs/operations.md "The broker restarted empty"):

- every ingest request that would produce events answers 503
  ``broker_lost_data`` with ``Retry-After`` (:class:`LossGuardedSink`, the
  one sink every ingest path writes through): accepted events would be
  applied against a log that no longer holds their learning instances and
  registrations, and be dead-lettered or folded onto lost states;
- ``/readyz`` fails its ``broker_log`` check with the reported reason.

``/readyz`` also fails its ``worker`` check while no worker has refreshed its
heartbeat (app/worker/heartbeat.py) for ``MASTERY_WORKER_HEARTBEAT_TTL_S``: events
accepted then wait in the broker, unapplied. Both checks belong to an API
with ingest (``KAFKA_BOOTSTRAP_SERVERS`` set), as the ``broker`` check does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.errors import BrokerLost
from api.health import Check, CheckFailed
from api.sink import EventSink
from infra.read_model import ReadModelKeys
from infra.topic_names import AnyEvent
from schemas.broker_status import BrokerLoss

__all__ = ["BrokerLossStatus", "LossGuardedSink", "broker_loss_checks"]

log = logging.getLogger(__name__)


class BrokerLossStatus:
    """The reported loss, read from Redis at most once per ``cache_s``."""

    def __init__(
        self,
        redis: Redis,
        keys: ReadModelKeys | None = None,
        *,
        cache_s: float = 1.0,
    ) -> None:
        self.redis = redis
        self.keys = keys or ReadModelKeys()
        self.cache_s = cache_s
        self._read_at = -float("inf")
        self._loss: BrokerLoss | None = None

    async def read(self) -> BrokerLoss | None:
        """The reported loss, or None, read now (raises on a Redis error)."""
        raw = await self.redis.get(self.keys.broker_loss())
        self._loss = None if raw is None else BrokerLoss.stored(raw)
        self._read_at = time.monotonic()
        return self._loss

    async def current(self) -> BrokerLoss | None:
        """As :meth:`read`, at most ``cache_s`` old (one read per second
        however many ingest requests)."""
        if time.monotonic() - self._read_at >= self.cache_s:
            return await self.read()
        return self._loss


class LossGuardedSink:
    """An :class:`EventSink` that refuses events while a loss is reported."""

    def __init__(
        self, sink: EventSink, status: BrokerLossStatus, *, retry_after_s: int = 5
    ) -> None:
        self._sink = sink
        self._status = status
        self._retry_after_s = retry_after_s

    async def send(self, events: Sequence[AnyEvent]) -> None:
        if events:
            try:
                loss = await self._status.current()
            except (RedisError, OSError) as exc:
                # The report is advisory: Redis trouble must not stop ingest.
                log.warning("cannot read the broker-loss status: %r", exc)
                loss = None
            if loss is not None:
                raise BrokerLost(
                    "the broker lost data that was already processed; events "
                    "are not accepted until an operator has dealt with it",
                    details={
                        "reason": loss.describe(),
                        "reported_by": loss.by,
                        "reported_at": loss.at.isoformat(),
                        "stored": [],
                    },
                    retry_after_s=self._retry_after_s,
                )
        await self._sink.send(events)


def broker_loss_checks(
    redis: Redis, status: BrokerLossStatus, heartbeat_ttl_s: float
) -> tuple[dict[str, Check], dict[str, str]]:
    """The ``broker_log`` and ``worker`` readiness checks (both need Redis)."""
    keys = status.keys

    async def broker_log() -> None:
        loss = await status.read()
        if loss is not None:
            raise CheckFailed(
                f"{loss.describe()}; reported by {loss.by} at "
                f"{loss.at.isoformat()}; `mastery broker-reset` clears it"
            )

    async def worker() -> None:
        if not await redis.exists(keys.worker_heartbeat()):
            raise CheckFailed(
                f"no worker heartbeat in the last {heartbeat_ttl_s:g} s "
                "(MASTERY_WORKER_HEARTBEAT_TTL_S): no worker is running, or it "
                "is blocked; accepted events wait in the broker unapplied"
            )

    return (
        {"broker_log": broker_log, "worker": worker},
        {"broker_log": "redis", "worker": "redis"},
    )
