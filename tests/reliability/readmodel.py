"""Reading the whole Redis read model, to compare it before and after."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from infra.read_model import ReadModelKeys

__all__ = ["dump_read_model"]

#: Who materialized the model and when, which generation is live or was
#: numbered last, the workers' heartbeat and broker watch: metadata, not part
#: of the comparison.
_META = {ReadModelKeys().materialized(), *ReadModelKeys().deployment_keys()}


def dump_read_model(url: str, generation: int | None = None) -> dict[str, Any]:
    """Every ``ms:*`` key with its value (strings, sorted zset/set members),
    except the "materialized" marker and the generation pointers. With
    ``generation``: only that generation's keys, named as in generation 0 (so
    generations compare)."""
    keys = ReadModelKeys(generation=generation or 0)

    async def go() -> dict[str, Any]:
        redis = Redis.from_url(url)
        out: dict[str, Any] = {}
        try:
            async for raw in redis.scan_iter(match="ms:*", count=1000):
                name = raw.decode()
                if generation is not None:
                    if not keys.owns(name) or name == keys.materialized():
                        continue
                    name = "ms:" + name.removeprefix(keys.namespace + ":")
                elif name in _META:
                    continue
                key = raw
                kind = (await redis.type(key)).decode()
                if kind == "string":
                    out[name] = await redis.get(key)
                elif kind == "zset":
                    out[name] = await redis.zrange(key, 0, -1, withscores=True)
                elif kind == "set":
                    out[name] = sorted(await redis.smembers(key))
                elif kind == "hash":
                    out[name] = sorted((await redis.hgetall(key)).items())
        finally:
            await redis.aclose()
        return out

    return asyncio.run(go())
