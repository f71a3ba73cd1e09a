"""The projector on a real Redis: it waits out OOM (retrying until Redis can
write again) and raises a wrong command at once (app/worker/failures.py)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from app.devstack.embedded import EmbeddedRedis
from infra.read_model import Projection, ReadModelKeys, RedisProjector

pytestmark = pytest.mark.integration


async def test_a_projection_waits_out_oom_and_is_stored_when_memory_frees(
    redis_server: EmbeddedRedis,
) -> None:
    redis = Redis.from_url(redis_server.url)
    await redis.flushall()
    keys = ReadModelKeys(prefix="oom")
    projection = Projection(keys)
    projection.row("li-1", "reg-1", "goal-1", b'{"status":"in_progress"}')
    policy = await redis.config_get("maxmemory-policy")
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", "1")  # every write is refused: OOM
    try:
        writing = asyncio.ensure_future(
            RedisProjector(redis, max_backoff_s=0.05).write(projection)
        )
        await asyncio.sleep(0.5)  # several refused attempts
        assert not writing.done()
        assert await redis.get(keys.row("li-1", "reg-1", "goal-1")) is None
    finally:
        await redis.config_set("maxmemory", "0")
        await redis.config_set("maxmemory-policy", policy["maxmemory-policy"])
    await asyncio.wait_for(writing, 5.0)
    row = await redis.get(keys.row("li-1", "reg-1", "goal-1"))
    assert row == b'{"status":"in_progress"}'
    await redis.aclose()


async def test_a_wrong_command_is_raised_not_retried(
    redis_server: EmbeddedRedis,
) -> None:
    redis = Redis.from_url(redis_server.url)
    keys = ReadModelKeys(prefix="wrongtype")
    learners = keys.learners("li-1")
    await redis.delete(learners)
    await redis.set(learners, b"not a sorted set")  # the projector ZADDs here
    projection = Projection(keys)
    state_like = _registration(keys)
    projection.registration(state_like)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await asyncio.wait_for(RedisProjector(redis).write(projection), 5.0)
    await redis.delete(learners)
    await redis.aclose()


def _registration(keys: ReadModelKeys) -> object:
    from processors.registration import RegistrationState

    return RegistrationState("reg-1", "li-1", "u-1", "learner")
