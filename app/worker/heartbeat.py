"""The worker's heartbeat: "a worker is running", for the API's ``/readyz``.

Every running worker refreshes one Redis key
(:meth:`infra.read_model.keys.ReadModelKeys.worker_heartbeat`) with a time to
live of ``MASTERY_WORKER_HEARTBEAT_TTL_S``, from its event loop: a worker
that died, or whose loop is blocked for longer than that, stops refreshing
it, the key expires, and the API's readiness says so (api/broker_loss.py)
instead of accepting events that nothing applies.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from infra.read_model import ReadModelKeys

__all__ = ["Heartbeat"]

log = logging.getLogger(__name__)


class Heartbeat:
    """Refreshes the heartbeat key every third of its time to live."""

    def __init__(
        self,
        redis: Redis,
        by: str,
        ttl_s: float,
        keys: ReadModelKeys | None = None,
    ) -> None:
        self.redis = redis
        self.by = by
        self.ttl_s = ttl_s
        self.keys = keys or ReadModelKeys()

    async def beat(self) -> None:
        """Write the key once (raises on a Redis error)."""
        value = orjson.dumps({"by": self.by, "at": datetime.now(UTC).isoformat()})
        await self.redis.set(
            self.keys.worker_heartbeat(), value, px=max(1, int(self.ttl_s * 1000))
        )

    async def run(self) -> None:
        """Beat until cancelled; a Redis outage only skips beats."""
        while True:
            try:
                await self.beat()
            except (RedisError, OSError) as exc:
                log.debug("heartbeat not written: %r", exc)
            await asyncio.sleep(self.ttl_s / 3)
