"""The page script's own connections (api/store.py, _ScriptCaller) against a
real Redis: a flushed script cache, connections the server closed, a bounded
idle set, and a read cut off by its timeout."""

from __future__ import annotations

import asyncio
import signal

import pytest
from redis.asyncio import Redis

from api.errors import ServiceUnavailable
from api.store import RedisPageStore
from app.embedded import EmbeddedRedis
from tests.integration.auth_world import seed_world

pytestmark = pytest.mark.integration


def _clients(redis_url: str) -> int:
    async def count() -> int:
        redis = Redis.from_url(redis_url)
        try:
            return len(await redis.client_list()) - 1  # not this one
        finally:
            await redis.aclose()

    return asyncio.run(count())


def test_the_page_script_survives_a_flush_and_closed_connections(
    redis_server: EmbeddedRedis,
) -> None:
    seed_world(redis_server.url)

    async def go() -> None:
        redis = Redis.from_url(redis_server.url, socket_timeout=None)
        store = RedisPageStore(redis, timeout_s=2.0)
        admin = Redis.from_url(redis_server.url)
        try:
            first = await store.learning_instance_page("li-a", ["goal-a"], 0, 10)
            assert first.count == 2
            # The server forgot the script (SCRIPT FLUSH, a restart, a
            # failover): sent whole once, then known again.
            await admin.script_flush()
            again = await store.learning_instance_page("li-a", ["goal-a"], 0, 10)
            assert again.data == first.data
            # The server closed every idle connection (its idle timeout, a
            # restart): the read is retried once on a new connection.
            await asyncio.gather(
                *(
                    store.learning_instance_page("li-a", ["goal-a"], 0, 10)
                    for _ in range(5)
                )
            )
            assert len(store._script._idle) == 5
            for client in await admin.client_list():
                if client["id"] != str(await admin.client_id()):
                    await admin.client_kill_filter(_id=client["id"])
            after = await store.learning_instance_page("li-a", ["goal-a"], 0, 10)
            assert after.data == first.data
            # Many reads at once: idle connections kept are bounded.
            pages = await asyncio.gather(
                *(
                    store.learning_instance_page("li-a", ["goal-a"], 0, 10)
                    for _ in range(store._script.IDLE_KEPT + 20)
                )
            )
            assert {p.data for p in pages} == {first.data}
            assert len(store._script._idle) == store._script.IDLE_KEPT
        finally:
            await store.aclose()
            await redis.aclose()
            await admin.aclose()
        assert store._script._idle == []

    asyncio.run(go())
    assert _clients(redis_server.url) == 0  # every connection closed


def test_a_read_past_its_timeout_drops_its_connection() -> None:
    server = EmbeddedRedis().start()
    try:
        seed_world(server.url)
        assert server.proc is not None

        async def go() -> None:
            redis = Redis.from_url(server.url, socket_timeout=None)
            store = RedisPageStore(redis, timeout_s=0.5)
            try:
                await store.learning_instance_page("li-a", ["goal-a"], 0, 10)
                assert len(store._script._idle) == 1
                server.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
                with pytest.raises(ServiceUnavailable, match="unreachable"):
                    await store.learning_instance_page("li-a", ["goal-a"], 0, 10)
                assert store._script._idle == []  # not reused: its reply may come
                server.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
                page = await store.learning_instance_page("li-a", ["goal-a"], 0, 10)
                assert page.count == 2
            finally:
                await store.aclose()
                await redis.aclose()

        asyncio.run(go())
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)
        server.stop()
