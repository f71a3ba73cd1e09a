"""The row feed on a real Redis: the projector's MULTI/EXEC appends changed rows
to the learning instance's change stream (keys as ReadModelKeys builds them,
passed in KEYS[] to every script of infra/read_model/scripts.py) and keeps the
dashboard's indexes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
import pytest

from api.change_hub import ChangeHub
from api.dashboard import RedisViewStore
from api.facts import GoalFacts, RedisFactStore, RegistrationFacts
from api.store import RedisPageStore
from infra.read_model import Projection, ReadModelKeys, RedisProjector
from schemas.events import (
    GoalDefined,
    LearningInstanceCreated,
    RegistrationCreated,
    Target,
)
from tests.conftest import RedisTarget

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = ReadModelKeys("feedtest")


def _row(progress: float) -> bytes:
    return orjson.dumps(
        {"goal_id": "g1", "status": "in_progress", "progress": progress}
    )


def _catalog(p: Projection) -> None:
    p.learning_instance(
        LearningInstanceCreated(
            event_id="e-li",
            occurred_at=T0,
            learning_instance_id="li-1",
            partner_id="p1",
        )
    )
    for g in ("g1", "g2"):
        p.goal(
            GoalDefined(
                event_id=f"e-{g}",
                occurred_at=T0,
                goal_id=g,
                learning_instance_id="li-1",
                targets=[Target(learning_objective_id="lo-1")],
            ),
            b"{}",
        )
    for reg, user, role in (("r1", "u1", "learner"), ("r-t", "t1", "instructor")):
        p.registration(
            RegistrationCreated(
                event_id=f"e-{reg}",
                occurred_at=T0,
                registration_id=reg,
                learning_instance_id="li-1",
                user_id=user,
                role=role,
            )
        )


def test_changed_rows_are_appended_in_the_batch_transaction(
    redis_target: RedisTarget,
) -> None:
    async def go() -> None:
        redis = redis_target.client()
        async for key in redis.scan_iter("feedtest:*"):
            await redis.delete(key)
        projector = RedisProjector(redis)
        # The goal and the row in the same batch.
        p = Projection(KEYS)
        _catalog(p)
        p.row("li-1", "r1", "g1", _row(0.1))
        await projector.write(p)
        stream = KEYS.changes("li-1")
        entries = await redis.xrange(stream)
        assert [e[1] for e in entries] == [
            {b"r": b"r1", b"g": b"g1", b"row": _row(0.1)}
        ]

        # A replayed batch (same rows) appends nothing; a changed row does.
        for progress in (0.1, 0.1, 0.2):
            p = Projection(KEYS)
            p.row("li-1", "r1", "g1", _row(progress))
            p.row("li-1", "r1", "g2", _row(0.5))
            await projector.write(p)
        rows = [(e[1][b"g"], e[1][b"row"]) for e in await redis.xrange(stream)]
        assert rows == [(b"g1", _row(0.1)), (b"g2", _row(0.5)), (b"g1", _row(0.2))]
        assert await redis.get(KEYS.row("li-1", "r1", "g1")) == _row(0.2)

        # A row of another learning instance, in the same batch as one of
        # li-1: each goes to its own LI's stream only.
        p = Projection(KEYS)
        p.row("li-2", "r2", "g9", _row(0.3))
        p.row("li-1", "r1", "g2", _row(0.6))
        await projector.write(p)
        assert len(await redis.xrange(stream)) == 4
        other = KEYS.changes("li-2")
        assert [e[1][b"r"] for e in await redis.xrange(other)] == [b"r2"]
        assert {k async for k in redis.scan_iter("feedtest:changes:*")} == {
            stream.encode(),
            other.encode(),
        }
        p = Projection(KEYS)
        p.row("li-1", "r1", "g2", _row(0.5))
        await projector.write(p)

        # Indexes: the LI's goals, the learner's registration (not instructors').
        assert await redis.smembers(KEYS.goals("li-1")) == {b"g1", b"g2"}
        assert await redis.hgetall(KEYS.learner_registrations("li-1")) == {b"u1": b"r1"}

        # The API's Lua scripts read the same keys.
        last = (await redis.xrevrange(stream, count=1))[0][0].decode()
        snap = await RedisPageStore(redis, KEYS).snapshot(
            "li", "li-1", ["g1", "g2"], "", after=None, max_learners=10
        )
        assert snap.last_id == last and not snap.resumed and snap.li_id == "li-1"
        assert snap.page.count == 1
        assert snap.page.data == (
            b'{"registration_id":"r1","status_and_progress":['
            + _row(0.2)
            + b","
            + _row(0.5)
            + b"]}"
        )
        assert snap.page.row_bytes == len(_row(0.2)) + len(_row(0.5))
        resumed = await RedisPageStore(redis, KEYS).snapshot(
            "reg", "r1", ["g1"], "", after=entries[0][0].decode(), max_learners=10
        )
        assert resumed.resumed and resumed.page.count == 0 and resumed.page.data == b""
        assert resumed.li_id == "li-1"
        assert resumed.last_id == entries[0][0].decode()
        view = await RedisViewStore(redis, KEYS).view("li-1", "u1")
        assert view == {
            "partner_id": "p1",
            "instructor": False,
            "registration_id": "r1",
            "goal_ids": ["g1", "g2"],
            # No names were given (tests/unit/test_names.py and the
            # dashboard tests give some).
            "title": None,
            "goal_names": {"g1": {}, "g2": {}},
            "learner_names": {},
        }
        teacher = await RedisViewStore(redis, KEYS).view("li-1", "t1")
        assert teacher is not None and teacher["instructor"] is True
        assert await RedisViewStore(redis, KEYS).view("li-none", "u1") is None

        # The ingest's facts (lookups by id, then their learning instances)
        # and a timeline, on a cluster as on one server.
        facts = RedisFactStore(redis, KEYS)
        regs = await facts.registrations(["r1", "r-t", "r-none"])
        assert regs == {
            "r1": RegistrationFacts("li-1", "u1", "learner", "p1"),
            "r-t": RegistrationFacts("li-1", "t1", "instructor", "p1"),
        }
        assert await facts.goals(["g1", "g-none"]) == {"g1": GoalFacts("li-1", "p1")}
        assert await facts.learning_instance_partner("li-1") == "p1"
        assert await facts.learning_instance_partner("li-none") is None
        p = Projection(KEYS)
        p.history("li-1", "r1", "g1", b'[{"at":"t"}]')
        await projector.write(p)
        store = RedisPageStore(redis, KEYS)
        assert await store.history("r1", "g1") == b'[{"at":"t"}]'
        assert await store.history("r1", "g2") is None
        assert await store.history("r-none", "g1") is None
        await store.aclose()

        # A live stream's reader (a blocking XREAD on the LI's stream) gets
        # the next changed row.
        hub = ChangeHub(redis_target.client(), KEYS, block_ms=500)
        last = (await redis.xrevrange(stream, count=1))[0][0].decode()
        async with hub.subscribe("li-1", last, ["g1"]) as sub:
            p = Projection(KEYS)
            p.row("li-1", "r1", "g1", _row(0.7))
            await projector.write(p)
            batches = sub.batches()
            batch = await asyncio.wait_for(anext(batches), 10)
        await hub.close()
        assert [(c.registration_id, c.goal_id, c.row) for c in batch] == [
            ("r1", "g1", _row(0.7))
        ]
        await redis.aclose()

    asyncio.run(go())
