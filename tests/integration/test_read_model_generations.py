"""The API reads the generation ``ms:meta:generation`` names, in the same Lua
call as the data (schemas/read_model.py, docs/read-model.md "Generations"):
pages, ingest facts and /readyz. Real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from starlette.testclient import TestClient

from api.health import CheckFailed, redis_checks
from api.metrics import ApiMetrics
from app.embedded import EmbeddedRedis
from schemas.read_model import ReadModelKeys
from tests.integration.auth_world import api_client, bearer, seed_world

pytestmark = pytest.mark.integration

KEYS = ReadModelKeys()
ADMIN = bearer("adm1", "p1", ("partner_admin",))
PAGE = "/registrations/reg-a1/metrics/status-and-progress"
JSON = {"content-type": "application/json"}


def _move_to_generation(redis: Redis, generation: int) -> None:
    """Rename every generation-0 key into ``generation`` and point to it."""
    target = KEYS.in_generation(generation)
    for raw in list(redis.scan_iter(match=KEYS.pattern())):
        name = raw.decode()
        if KEYS.owns(name):
            redis.rename(name, target.namespace + name.removeprefix("ms"))
    redis.set(KEYS.current_generation(), generation)


@pytest.fixture
def world(redis_server: EmbeddedRedis) -> Iterator[Redis]:
    seed_world(redis_server.url)
    redis = Redis.from_url(redis_server.url)
    yield redis
    redis.flushall()


def _page(client: TestClient) -> int:
    r = client.post(PAGE, content=b'{"goal_ids": ["goal-a"]}', headers=JSON | ADMIN)
    return r.status_code


def _ready(url: str) -> bool:
    async def go() -> bool:
        redis = AsyncRedis.from_url(url)
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
    world: Redis, redis_server: EmbeddedRedis
) -> None:
    world.set(KEYS.materialized(), b"{}")
    with api_client(redis_server.url, None, "gen") as client:
        assert _page(client) == 200
        assert _ready(redis_server.url)

        _move_to_generation(world, 3)
        assert world.get(KEYS.registration("reg-a1")) is None  # gone from gen 0
        assert _page(client) == 200  # served from ms:g3:…
        assert _ready(redis_server.url)  # ms:g3:meta:materialized

        world.set(KEYS.current_generation(), 0)  # back to the (empty) gen 0
        # not materialized: an id it lacks may only be missing, so 503, not 404
        assert _page(client) == 503
        assert not _ready(redis_server.url)
        world.set(KEYS.materialized(), b"{}")  # a whole (empty) generation 0
        assert _page(client) == 404


def test_generation_keys_are_namespaced_and_owned() -> None:
    g0, g2 = KEYS, KEYS.in_generation(2)
    assert g0.row("r", "g") == "ms:row:r:g"
    assert g2.row("r", "g") == "ms:g2:row:r:g"
    assert g2.materialized() == "ms:g2:meta:materialized"
    assert g2.current_generation() == g0.current_generation() == "ms:meta:generation"
    assert g0.owns("ms:goal:g1") and g0.owns("ms:meta:materialized")
    assert not g0.owns("ms:g2:row:r:g")
    assert not g0.owns(g0.current_generation())
    assert not g0.owns(g0.generation_counter())
    assert g2.owns("ms:g2:row:r:g") and not g2.owns("ms:g21:row:r:g")
    assert not g2.owns("ms:row:r:g")
    with pytest.raises(ValueError, match="generation"):
        ReadModelKeys(generation=-1)
