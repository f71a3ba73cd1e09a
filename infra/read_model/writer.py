"""The Redis projector: writes a :class:`~infra.read_model.projection.Projection`.

Each learning instance's writes go in one MULTI/EXEC in its slot: its
catalog keys, its registrations' facts and places, its rows and timelines,
and the row feed (every row whose JSON changes is appended to the LI's change
stream in the same transaction, so a live dashboard that takes a snapshot
with the stream's last id and then reads the stream after it misses nothing
and sees nothing twice; rows whose JSON is unchanged append nothing, so a
replay does not flood the dashboards). On a single Redis the whole
projection is one MULTI/EXEC; on Redis Cluster one per learning instance,
plus the lookups by another id (``reg:``, ``goal:``) outside a transaction.

Every write is idempotent (SET of a derived value, ZADD NX, SADD, HSET), so a
batch replayed after a crash converges to the same keys. While Redis is
unreachable the projector retries with backoff and holds the batch: the
worker's consumer is blocked, offsets are not committed, nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from infra.read_model.keys import CHANGES_MAXLEN, ReadModelKeys
from infra.read_model.projection import Projection
from infra.read_model.scripts import FEED_LUA
from infra.redis_client import transient_redis_error

__all__ = ["RedisProjector"]

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    """One learning instance's share of a projection."""

    li: str
    strings: dict[str, bytes] = field(default_factory=dict)
    goals: list[str] = field(default_factory=list)
    goal_names: dict[str, bytes] = field(default_factory=dict)
    learners: dict[str, float] = field(default_factory=dict)
    instructors: list[str] = field(default_factory=list)
    learner_registrations: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    unnamed: list[str] = field(default_factory=list)
    #: (row key, registration, goal, row)
    rows: list[tuple[str, str, str, bytes]] = field(default_factory=list)

    def queue(self, pipe: Any, keys: ReadModelKeys) -> None:
        li = self.li
        if self.rows:
            # Before the rows' SET: the script compares with the stored rows.
            feed: list[Any] = [CHANGES_MAXLEN]
            for _, reg, goal, row in self.rows:
                feed += [reg, goal, row]
            pipe.eval(
                FEED_LUA,
                1 + len(self.rows),
                keys.changes(li),
                *(key for key, *_ in self.rows),
                *feed,
            )
            self.strings.update((key, row) for key, _, _, row in self.rows)
        if self.strings:
            # As a command: a cluster pipeline blocks its mset() helper,
            # though these keys share the slot.
            pipe.execute_command(
                "MSET", *(x for kv in self.strings.items() for x in kv)
            )
        if self.goals:
            pipe.sadd(keys.goals(li), *self.goals)
        if self.goal_names:
            pipe.hset(keys.goal_names(li), mapping=self.goal_names)
        if self.learners:
            pipe.zadd(keys.learners(li), self.learners, nx=True)
        if self.instructors:
            pipe.sadd(keys.instructors(li), *self.instructors)
        if self.learner_registrations:
            pipe.hset(
                keys.learner_registrations(li),
                mapping=self.learner_registrations,
            )
        if self.names:
            pipe.hset(keys.learner_names(li), mapping=self.names)
        if self.unnamed:
            pipe.hdel(keys.learner_names(li), *self.unnamed)


def _split(projection: Projection) -> tuple[dict[str, bytes], list[_Slot]]:
    """The lookups by another id, and each learning instance's share."""
    keys = projection.keys
    lookups: dict[str, bytes] = {}
    slots: dict[str, _Slot] = defaultdict(lambda: _Slot(""))

    def slot(li: str) -> _Slot:
        s = slots[li]
        s.li = li
        return s

    for li, record in projection.learning_instances.items():
        slot(li).strings[keys.learning_instance(li)] = record.value()
    for goal in projection.goals.values():
        li = goal.learning_instance_id
        lookups[keys.goal(goal.goal_id)] = li.encode()
        s = slot(li)
        s.strings[keys.goal_template(li, goal.goal_id)] = goal.template
        s.goals.append(goal.goal_id)
    for (li, goal_id), names in projection.named_goals.items():
        slot(li).goal_names[goal_id] = names
    for reg in projection.registrations.values():
        li = reg.learning_instance_id
        value = reg.value()
        lookups[keys.registration(reg.registration_id)] = value
        s = slot(li)
        s.strings[keys.member(li, reg.registration_id)] = value
        if reg.role == "learner":
            s.learners[reg.registration_id] = float(reg.created_us)
            s.learner_registrations[reg.user_id] = reg.registration_id
            if reg.display_name is None:
                s.unnamed.append(reg.registration_id)
            else:
                s.names[reg.registration_id] = reg.display_name
        else:
            s.instructors.append(reg.user_id)
    for (li, reg_id, goal_id), row in projection.rows.items():
        slot(li).rows.append((keys.row(li, reg_id, goal_id), reg_id, goal_id, row))
    for (li, reg_id, goal_id), points in projection.histories.items():
        slot(li).strings[keys.history(li, reg_id, goal_id)] = points
    return lookups, list(slots.values())


class RedisProjector:
    """Writes projections to Redis (a single server or a Redis Cluster),
    retrying until they are stored."""

    def __init__(self, redis: Redis | RedisCluster, *, max_backoff_s: float = 5.0):
        self.redis = redis
        self.max_backoff_s = max_backoff_s

    async def write(self, projection: Projection) -> None:
        """Write one projection (atomically per learning instance); retry
        while Redis cannot write (unreachable, or a transient state such as
        OOM: :func:`infra.redis_client.transient_redis_error`)."""
        if not len(projection):
            return
        delay = 0.05
        while True:
            try:
                await self._write_once(projection)
                return
            except (RedisError, OSError) as exc:
                if not transient_redis_error(exc):
                    raise
                log.warning("Redis unavailable (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)

    async def _write_once(self, projection: Projection) -> None:
        keys = projection.keys
        lookups, slots = _split(projection)
        if not isinstance(self.redis, RedisCluster):
            async with self.redis.pipeline(transaction=True) as pipe:
                for s in slots:
                    s.queue(pipe, keys)
                if lookups:
                    pipe.mset(lookups)
                await pipe.execute()
            return
        cluster = self.redis

        async def one(s: _Slot) -> None:
            async with cluster.pipeline(transaction=True) as pipe:
                s.queue(pipe, keys)
                await pipe.execute()

        async def by_id() -> None:
            if lookups:
                await cluster.mset_nonatomic(lookups)

        await asyncio.gather(*(one(s) for s in slots), by_id())
