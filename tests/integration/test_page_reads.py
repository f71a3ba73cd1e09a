"""The page script's own connections (api/store.py, _ScriptCaller) against a
real Redis: a flushed script cache, connections the server closed, a bounded
idle set, and a read cut off by its timeout; and pages read through their
frames (the rows' MGET in the script's MULTI/EXEC) against pages read afresh."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from api.errors import ServiceUnavailable
from api.store import Page, RedisPageStore
from app.cli.rebuild import delete_generation
from app.devstack.embedded import EmbeddedRedis
from infra.read_model import Projection, ReadModelKeys, RedisProjector
from infra.read_model.scripts import PAGE_LUA
from schemas.events import GoalDefined, RegistrationCreated, Target
from tests.conftest import RedisTarget
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


# -- a page through its frame (api/store.py, _Frame) ---------------------------

KEYS = ReadModelKeys()


async def _commandstats(redis: Any) -> dict[str, dict[str, int]]:
    """INFO commandstats, summed over a cluster's nodes."""
    if not isinstance(redis, RedisCluster):
        stats: dict[str, dict[str, int]] = await redis.info("commandstats")
        return stats
    per_node = await redis.info("commandstats", target_nodes=RedisCluster.ALL_NODES)
    total: dict[str, dict[str, int]] = {}
    for node_stats in per_node.values():
        for name, counts in node_stats.items():
            calls = total.setdefault(name, {"calls": 0})
            calls["calls"] += int(counts["calls"])
    return total


def _same(a: Page, b: Page) -> None:
    assert (a.data, a.total, a.count, a.row_bytes, a.version, a.access) == (
        b.data,
        b.total,
        b.count,
        b.row_bytes,
        b.version,
        b.access,
    )


def test_a_page_read_through_its_frame_is_the_page_read_afresh(
    redis_target: RedisTarget,
) -> None:
    """A store that keeps the page's frame (its ids and row keys, MGET in the
    script's MULTI/EXEC) serves exactly what a store without one serves (its
    first script names the page's registrations, then the same transaction),
    after every kind of change: a row, a learner registered before the
    others, an instructor, a goal defined later, a row lost, a caller denied,
    a generation switch. ``reads``: the page scripts a read runs (1: through
    its frame, in one round trip; 2: the frame was missing or no longer held).
    On one server and on a Redis Cluster (its nodes' counts summed)."""
    seed_world(redis_target.url, cluster=redis_target.cluster)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    async def go() -> None:
        redis = redis_target.client()
        await redis.script_load(PAGE_LUA)  # every node: no NOSCRIPT to count
        warm = RedisPageStore(redis)
        writer = RedisProjector(redis)

        def transactions() -> int:
            return int(stats.get("cmdstat_exec", {}).get("calls", 0))

        def scripts() -> int:
            return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

        async def check(
            goals: list[str],
            *,
            reads: int,
            exchanges: int = 1,
            offset: int = 0,
            caller: str = "",
        ) -> Page:
            nonlocal stats
            stats = await _commandstats(redis)
            before = scripts(), transactions()
            page = await warm.learning_instance_page(
                "li-a", goals, offset, 10, caller=caller
            )
            stats = await _commandstats(redis)
            # A read ends with one transaction (the script, the MGET).
            after = (scripts(), transactions())
            assert after == (before[0] + reads, before[1] + exchanges)
            fresh = RedisPageStore(redis)
            try:
                _same(
                    page,
                    await fresh.learning_instance_page(
                        "li-a", goals, offset, 10, caller=caller
                    ),
                )
            finally:
                await fresh.aclose()
            return page

        stats: dict[str, Any] = {}
        try:
            first = await check(["goal-a"], reads=2)
            assert first.count == 2
            same = await check(["goal-a"], reads=1)
            assert same.data == first.data
            # A row changes: the frame holds (same ids), the MGET reads it.
            p = Projection(KEYS)
            p.row(
                "li-a", "reg-a1", "goal-a", b'{"goal_id":"goal-a","status":"mastered"}'
            )
            await writer.write(p)
            changed = await check(["goal-a"], reads=1)
            assert b'"mastered"' in changed.data
            assert changed.version != first.version
            # A learner registered before the others (no row yet: the
            # template): the frame no longer holds; the next read has a new one.
            p = Projection(KEYS)
            p.registration(
                RegistrationCreated(
                    event_id="e-early",
                    occurred_at=t0 - timedelta(days=1),
                    registration_id="reg-a0",
                    learning_instance_id="li-a",
                    user_id="la0",
                    role="learner",
                )
            )
            await writer.write(p)
            moved = await check(["goal-a"], reads=2, exchanges=2)
            assert moved.count == 3
            assert moved.data.startswith(b'{"registration_id":"reg-a0"')
            assert b'"no_work"' in moved.data
            await check(["goal-a"], reads=1)
            # An instructor registered: not a row, the frame holds.
            p = Projection(KEYS)
            p.registration(
                RegistrationCreated(
                    event_id="e-ti2",
                    occurred_at=t0,
                    registration_id="reg-ti-a2",
                    learning_instance_id="li-a",
                    user_id="ti-a2",
                    role="instructor",
                )
            )
            await writer.write(p)
            await check(["goal-a"], reads=1)
            # A goal defined later: its template for everyone, then a row.
            p = Projection(KEYS)
            p.goal(
                GoalDefined(
                    event_id="e-goal-a2",
                    occurred_at=t0,
                    goal_id="goal-a2",
                    learning_instance_id="li-a",
                    targets=[Target(learning_objective_id="lo-1")],
                ),
                b'{"goal_id":"goal-a2","status":"no_work"}',
            )
            await writer.write(p)
            both = ["goal-a", "goal-a2"]
            await check(both, reads=2)
            await check(both, reads=1)
            p = Projection(KEYS)
            p.row(
                "li-a", "reg-a2", "goal-a2", b'{"goal_id":"goal-a2","status":"started"}'
            )
            await writer.write(p)
            assert b'"started"' in (await check(both, reads=1)).data
            # A row lost (Redis lost a key, before the repair): the template.
            await redis.delete(KEYS.row("li-a", "reg-a1", "goal-a"))
            lost = await check(["goal-a"], reads=1)
            assert b'"mastered"' not in lost.data
            # Another page of the same class, and a caller the facts deny:
            # the same facts as a fresh read, the route refuses on them.
            await check(["goal-a"], reads=2, offset=1)
            await check(["goal-a"], reads=1, offset=1)
            denied = await check(["goal-a"], reads=1, caller="stranger")
            assert not denied.access.caller_is_instructor
            # A goal of another learning instance: the same refusal.
            refused = await warm.learning_instance_page("li-a", ["goal-b"], 0, 10)
            assert refused.unknown_goals == ("goal-b",)
            # A holder of the current version: 304, no MGET sent.
            held = await check(["goal-a"], reads=1)
            stats = await _commandstats(redis)
            before = transactions()
            again = await warm.learning_instance_page(
                "li-a", ["goal-a"], 0, 10, if_version=held.version
            )
            stats = await _commandstats(redis)
            assert again.not_modified and transactions() == before
            # A generation switch (mastery rebuild --flush) with a row that
            # differs, and generation 0 deleted as the rebuild deletes it
            # (sentinels first): the store's script finds no sentinel in
            # generation 0, reads the pointer again, then reads generation 2
            # (its frame named generation 0's keys, so it is refused).
            g2 = KEYS.in_generation(2)
            async for raw in redis.scan_iter(match=KEYS.pattern()):
                name = raw.decode()
                if KEYS.owns(name):
                    # DUMP and RESTORE: a copy to another slot (reg:, goal:).
                    copy = g2.namespace + name.removeprefix("ms")
                    await redis.restore(copy, 0, await redis.dump(name))
            await redis.set(
                g2.row("li-a", "reg-a2", "goal-a"),
                b'{"goal_id":"goal-a","status":"g2"}',
            )
            await redis.set(KEYS.current_generation(), 2)
            await delete_generation(redis, KEYS)
            switched = await check(["goal-a"], reads=3, exchanges=2)
            assert b'"g2"' in switched.data
            await check(["goal-a"], reads=1)
        finally:
            await warm.aclose()
            await redis.aclose()

    asyncio.run(go())


def test_frames_kept_are_bounded(redis_server: EmbeddedRedis) -> None:
    seed_world(redis_server.url)

    async def go() -> None:
        redis = Redis.from_url(redis_server.url)
        store = RedisPageStore(redis)
        store.FRAMES_KEPT = 3
        try:
            for offset in range(5):
                await store.learning_instance_page(
                    "li-a", ["goal-a"], offset % 2, 1 + offset
                )
            assert len(store._frames) == 3
            assert ("li-a", 0, 5, "goal-a") in store._frames
            assert ("li-a", 0, 1, "goal-a") not in store._frames  # the oldest
            # And in bytes: the budget of one frame keeps the newest only.
            newest = store._frames[("li-a", 0, 5, "goal-a")]
            store.FRAME_BYTES_KEPT = newest.size
            await store.learning_instance_page("li-a", ["goal-a"], 0, 5, caller="x")
            await store.learning_instance_page("li-a", ["goal-a"], 1, 5)
            assert list(store._frames) == [("li-a", 1, 5, "goal-a")]
            assert store._frame_bytes == store._frames[("li-a", 1, 5, "goal-a")].size
        finally:
            await store.aclose()
            await redis.aclose()

    asyncio.run(go())


def test_a_row_key_of_another_type_reads_as_missing_on_both_paths(
    redis_server: EmbeddedRedis,
) -> None:
    """MGET answers nil for a key that holds no string, inside the script or
    in the frame's transaction: the goal's template either way."""
    seed_world(redis_server.url)

    async def go() -> None:
        redis = Redis.from_url(redis_server.url)
        store = RedisPageStore(redis)
        try:
            await store.learning_instance_page("li-a", ["goal-a"], 0, 10)
            await redis.delete(KEYS.row("li-a", "reg-a1", "goal-a"))
            await redis.rpush(KEYS.row("li-a", "reg-a1", "goal-a"), b"x")
            framed = await store.learning_instance_page("li-a", ["goal-a"], 0, 10)
            store._frames.clear()
            fresh = await store.learning_instance_page("li-a", ["goal-a"], 0, 10)
            _same(framed, fresh)
            assert framed.data.startswith(
                b'{"registration_id":"reg-a1","status_and_progress":'
                b'[{"goal_id":"goal-a","status":"no_work"'
            )
        finally:
            await store.aclose()
            await redis.aclose()

    asyncio.run(go())
