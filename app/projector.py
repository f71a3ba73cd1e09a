"""The Redis projector: writes the read model the API serves (docs/read-model.md).

A :class:`Projection` collects everything one batch changes; :class:`RedisProjector`
writes it in one MULTI/EXEC pipeline. Every write is idempotent (SET of a
derived value, ZADD NX, SADD), so a batch replayed after a crash converges to
the same keys. While Redis is unreachable the projector retries with backoff and
holds the batch: the worker's consumer is blocked, offsets are not committed,
and nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.failures import transient_redis_error
from app.row_feed import add_to_pipeline
from processors.registration import RegistrationState, epoch_us
from schemas.events import GoalDefined, LearningInstanceCreated, RegistrationCreated
from schemas.read_model import ReadModelKeys

__all__ = ["Projection", "RedisProjector"]

log = logging.getLogger(__name__)


@dataclass
class Projection:
    """The read-model writes of one batch, deduplicated by key."""

    keys: ReadModelKeys
    strings: dict[str, bytes] = field(default_factory=dict)
    learners: list[tuple[str, str, float]] = field(default_factory=list)
    instructors: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.strings) + len(self.learners) + len(self.instructors)

    def row(self, registration_id: str, goal_id: str, item: bytes) -> None:
        self.strings[self.keys.row(registration_id, goal_id)] = item

    def history(self, registration_id: str, goal_id: str, points: bytes) -> None:
        self.strings[self.keys.history(registration_id, goal_id)] = points

    def learning_instance(self, event: LearningInstanceCreated) -> None:
        meta: dict[str, str] = {"partner_id": event.partner_id}
        if event.title is not None:
            meta["title"] = event.title
        self.strings[self.keys.learning_instance(event.learning_instance_id)] = (
            orjson.dumps(meta)
        )

    def goal(self, goal: GoalDefined, template: bytes, names: bytes = b"{}") -> None:
        """The goal's owner, template and names (:func:`processors.rows.goal_names`;
        the worker and ``mastery rebuild`` always give them)."""
        self.strings[self.keys.goal(goal.goal_id)] = goal.learning_instance_id.encode()
        self.strings[self.keys.goal_template(goal.goal_id)] = template
        self.goal_names(goal.goal_id, names)

    def goal_names(self, goal_id: str, names: bytes) -> None:
        self.strings[self.keys.goal_names(goal_id)] = names

    def registration(self, fact: RegistrationState | RegistrationCreated) -> None:
        """Registration facts (for access rules) and its place in the LI's order.

        A ``RegistrationCreated`` is projected as the state it creates (for
        seeding a read model; the worker projects folded states).
        """
        state = (
            RegistrationState(
                fact.registration_id,
                fact.learning_instance_id,
                fact.user_id,
                fact.role,
                created_us=epoch_us(fact.occurred_at),
                display_name=fact.display_name,
            )
            if isinstance(fact, RegistrationCreated)
            else fact
        )
        facts = {
            "learning_instance_id": state.learning_instance_id,
            "user_id": state.user_id,
            "role": state.role,
        }
        if state.display_name is not None:
            facts["display_name"] = state.display_name
        self.strings[self.keys.registration(state.registration_id)] = orjson.dumps(
            facts
        )
        if state.role == "learner":
            self.learners.append(
                (
                    state.learning_instance_id,
                    state.registration_id,
                    float(state.created_us),
                )
            )
        else:
            self.instructors.append((state.learning_instance_id, state.user_id))


class RedisProjector:
    """Writes projections to Redis, retrying until they are stored."""

    def __init__(self, redis: Redis, *, max_backoff_s: float = 5.0) -> None:
        self.redis = redis
        self.max_backoff_s = max_backoff_s

    async def write(self, projection: Projection) -> None:
        """Write one projection atomically; retry while Redis cannot write
        (unreachable, or a transient state such as OOM: app/failures.py)."""
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
        async with self.redis.pipeline(transaction=True) as pipe:
            # Live dashboards: changed rows to the change streams (before MSET).
            add_to_pipeline(pipe, projection.keys, projection.strings)
            if projection.strings:
                pipe.mset(projection.strings)
            for li_id, registration_id, score in projection.learners:
                pipe.zadd(
                    projection.keys.learners(li_id), {registration_id: score}, nx=True
                )
            for li_id, user_id in projection.instructors:
                pipe.sadd(projection.keys.instructors(li_id), user_id)
            await pipe.execute()
