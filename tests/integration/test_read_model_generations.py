"""The API reads the generation ``ms:meta:{ms}:generation`` names: it resolves the
pointer, then reads that generation's keys, and reads again when a read's
sentinel is gone (infra/read_model/generation.py, docs/read-model.md
"Generations"): pages, ingest facts and /readyz. Real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.health import CheckFailed, redis_checks
from api.metrics import ApiMetrics
from infra.read_model import Generation, ReadModelKeys
from infra.redis_client import sync_redis_client
from tests.conftest import RedisTarget
from tests.integration.auth_world import api_client, bearer, seed_world
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

KEYS = ReadModelKeys()
ADMIN = bearer("adm1", "p1", ("partner_admin",))
PAGE = "/registrations/reg-a1/metrics/status-and-progress"
JSON = {"content-type": "application/json"}


def _move_to_generation(redis: Any, generation: int) -> None:
    """Move every generation-0 key into ``generation`` and point to it (DUMP,
    RESTORE, DEL: a key may move to another cluster slot)."""
    target = KEYS.in_generation(generation)
    for raw in list(redis.scan_iter(match=KEYS.pattern())):
        name = raw.decode()
        if KEYS.owns(name):
            copy = target.namespace + name.removeprefix("ms")
            redis.restore(copy, 0, redis.dump(name))
            redis.delete(name)
    redis.set(KEYS.current_generation(), generation)


@pytest.fixture
def world(redis_target: RedisTarget) -> Iterator[Any]:
    seed_world(redis_target.url, cluster=redis_target.cluster)
    redis = sync_redis_client(redis_target.url, cluster=redis_target.cluster)
    yield redis
    redis.flushall()


def _page(client: TestClient) -> int:
    r = client.post(PAGE, content=b'{"goal_ids": ["goal-a"]}', headers=JSON | ADMIN)
    return r.status_code


def _ready(target: RedisTarget) -> bool:
    async def go() -> bool:
        redis = target.client()
        checks, _ = redis_checks(redis, ApiMetrics())
        try:
            await checks["read_model"]()
        except CheckFailed:
            return False
        finally:
            await redis.aclose()
        return True

    return asyncio.run(go())


def test_pages_and_readiness_follow_the_generation_pointer(
    world: Any, redis_target: RedisTarget
) -> None:
    world.set(KEYS.materialized(), b"{}")
    url, cluster = redis_target.url, redis_target.cluster
    with api_client(url, None, "gen", cluster=cluster) as client:
        assert _page(client) == 200
        assert _ready(redis_target)

        _move_to_generation(world, 3)
        assert world.get(KEYS.registration("reg-a1")) is None  # gone from gen 0
        assert _page(client) == 200  # served from ms:g3:…
        assert _ready(redis_target)  # ms:g3:meta:materialized

        world.set(KEYS.current_generation(), 0)  # back to the (empty) gen 0
        # Generation 3 is still whole: the API may read it for up to
        # FRESH_S, then reads generation 0. Not materialized: an id it lacks
        # may only be missing, so 503, not 404.
        status = wait_for(
            lambda: _page(client),
            accept=lambda status: status != 200,
            timeout_s=Generation.FRESH_S + 5,
            interval_s=0.05,
            what="the API to stop serving generation 3",
        )
        assert status == 503
        assert not _ready(redis_target)
        world.set(KEYS.materialized(), b"{}")  # a whole (empty) generation 0
        assert _page(client) == 404


def test_generation_keys_are_namespaced_and_owned() -> None:
    g0, g2 = KEYS, KEYS.in_generation(2)
    assert g0.row("li", "r", "g") == "ms:li:{li}:row:r:g"
    assert g2.row("li", "r", "g") == "ms:g2:li:{li}:row:r:g"
    assert g2.materialized() == "ms:g2:meta:materialized"
    assert (
        g2.current_generation() == g0.current_generation() == "ms:meta:{ms}:generation"
    )
    assert g0.owns("ms:goal:g1") and g0.owns("ms:meta:materialized")
    assert not g0.owns("ms:g2:li:{li}:row:r:g")
    assert not g0.owns(g0.current_generation())
    assert not g0.owns(g0.generation_counter())
    assert not g0.owns(g0.changes("li"))
    assert g2.owns("ms:g2:li:{li}:row:r:g") and not g2.owns("ms:g21:row:r:g")
    assert not g2.owns("ms:li:{li}:row:r:g")
    # What a generation's deletion removes first (infra/read_model/generation.py).
    assert g2.is_sentinel(g2.learning_instance("li"))
    assert g2.is_sentinel(g2.member("li", "r"))
    assert not g2.is_sentinel(g2.learners("li"))
    assert not g2.is_sentinel(g2.row("li", "r", "g"))
    assert not g0.is_sentinel(g2.learning_instance("li"))
    assert g2.parse_learning_instance(g2.learning_instance("li")) == "li"
    assert g2.parse_learning_instance(g2.learners("li")) is None
    assert g2.parse_registration(g2.registration("r")) == "r"
    with pytest.raises(ValueError, match="braces"):
        ReadModelKeys("m{s}")
    with pytest.raises(ValueError, match="generation"):
        ReadModelKeys(generation=-1)


def test_the_deployment_keys_share_one_slot(redis_target: RedisTarget) -> None:
    """What a worker's watch reads (one MGET of the pointer and the rebuild
    count) and what ``mastery broker-reset`` writes (one MULTI/EXEC of the
    loss and the offsets) a cluster accepts only within one slot."""

    async def go() -> tuple[Any, Any]:
        redis = redis_target.client()
        try:
            await redis.set(KEYS.rebuilds(), 4)
            read = await redis.mget(KEYS.current_generation(), KEYS.rebuilds())
            async with redis.pipeline(transaction=True) as pipe:
                pipe.delete(KEYS.broker_loss())
                pipe.hset(KEYS.broker_offsets(), mapping={"t:0": 7})
                written = await pipe.execute()
            await redis.delete(KEYS.rebuilds(), KEYS.broker_offsets())
        finally:
            await redis.aclose()
        return read, written

    assert asyncio.run(go()) == ([None, b"4"], [0, 1])
