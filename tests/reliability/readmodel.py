"""Reading the whole Redis read model, to compare it before and after."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from schemas.read_model import ReadModelKeys

__all__ = ["dump_read_model"]

#: Who materialized the model and when: metadata, not part of the comparison.
_MARKER = ReadModelKeys().materialized()


def dump_read_model(url: str) -> dict[str, Any]:
    """Every ``ms:*`` key with its value (strings, sorted zset/set members),
    except the "materialized" marker."""

    async def go() -> dict[str, Any]:
        redis = Redis.from_url(url)
        out: dict[str, Any] = {}
        try:
            async for key in redis.scan_iter(match="ms:*", count=1000):
                if key.decode() == _MARKER:
                    continue
                kind = (await redis.type(key)).decode()
                if kind == "string":
                    out[key.decode()] = await redis.get(key)
                elif kind == "zset":
                    out[key.decode()] = await redis.zrange(key, 0, -1, withscores=True)
                elif kind == "set":
                    out[key.decode()] = sorted(await redis.smembers(key))
        finally:
            await redis.aclose()
        return out

    return asyncio.run(go())
