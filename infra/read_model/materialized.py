"""The read model's "materialized" marker, which the API's ``/readyz`` requires.

Whoever has just written the whole read model sets it: ``mastery rebuild``
after its last write, and a worker once its start-up re-derivation is done.
A Redis that lost its data loses the marker too, so the API reports
``read_model`` as not ready instead of answering 404 for everything.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from redis.asyncio import Redis

from infra.read_model.keys import ReadModelKeys

__all__ = ["mark_materialized"]


async def mark_materialized(
    redis: Redis, by: str, keys: ReadModelKeys | None = None
) -> None:
    """Record that ``by`` (e.g. ``"mastery rebuild"``) materialized the model."""
    marker = (keys or ReadModelKeys()).materialized()
    await redis.set(
        marker, orjson.dumps({"by": by, "at": datetime.now(UTC).isoformat()})
    )
