"""The API reads the generation ``ms:meta:generation`` names: it resolves the
pointer, then reads that generation's keys, and reads again when a read's
sentinel is gone (infra/read_model/generation.py, docs/read-model.md
"Generations"): pages, ingest facts and /readyz. Real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from starlette.testclient import TestClient

from api.health import CheckFailed, redis_checks
from api.metrics import ApiMetrics
from app.embedded import EmbeddedRedis
from infra.read_model import Generation, ReadModelKeys
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
        # Generation 3 is still whole: the API may read it for up to
        # FRESH_S, then reads generation 0. Not materialized: an id it lacks
        # may only be missing, so 503, not 404.
        deadline = time.monotonic() + Generation.FRESH_S + 5
        while (status := _page(client)) == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status == 503
        assert not _ready(redis_server.url)
        world.set(KEYS.materialized(), b"{}")  # a whole (empty) generation 0
        assert _page(client) == 404


def test_generation_keys_are_namespaced_and_owned() -> None:
    g0, g2 = KEYS, KEYS.in_generation(2)
    assert g0.row("li", "r", "g") == "ms:li:{li}:row:r:g"
    assert g2.row("li", "r", "g") == "ms:g2:li:{li}:row:r:g"
    assert g2.materialized() == "ms:g2:meta:materialized"
    assert g2.current_generation() == g0.current_generation() == "ms:meta:generation"
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
