"""``mastery rebuild``: re-materialize the Redis read model from Kafka.

Reads the catalog topic and the worker's changelog whole, and writes every key
the workers would write, without a running worker: first the broker
self-check, then either into the live generation (additive) or, with
``--flush``, into a new generation that replaces the live one only if it is
at least as complete (else it is deleted: Redis is never left emptier than
the rebuild found it). A running worker derives its part again after every
rebuild, since the changelog can be behind it. docs/read-model.md,
"Rebuilding", has the steps.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError
from redis.asyncio import Redis

from infra.broker import BrokerMisreportsOffsets, profile_for, verify_broker
from infra.kafka_security import kafka_client_kwargs
from infra.read_model import Projection, ReadModelKeys, RedisProjector
from infra.read_model.materialized import mark_materialized
from infra.read_model.scripts import SWITCH_LUA
from infra.redis_client import redis_client
from infra.settings import Settings
from infra.topic_names import TopicNames
from infra.topic_reader import read_topic
from processors.catalog import Catalog
from processors.registration import RegistrationState
from processors.rows import derive_rows, goal_names, goal_template, timelines
from schemas.events import (
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    decode_event,
)

__all__ = [
    "ModelSize",
    "RebuildRefused",
    "RebuildReport",
    "changelog_topic",
    "delete_generation",
    "model_size",
    "progress_bar",
    "rebuild",
]

_BY = "mastery rebuild"


class RebuildRefused(RuntimeError):
    """The rebuild stopped without touching the live read model; the message
    says why and what to do."""


def changelog_topic(settings: Settings) -> str:
    """Faust's changelog topic of the worker's ``registration-state`` table."""
    return f"{settings.worker_id}-registration-state-changelog"


@dataclass(frozen=True, slots=True)
class RebuildReport:
    catalog_events: int
    registrations: int
    rows: int
    keys_written: int
    #: the generation written (and, with --flush, switched to)
    generation: int = 0
    #: keys of the replaced generation deleted (--flush)
    keys_deleted: int = 0


@dataclass(frozen=True, slots=True)
class ModelSize:
    """What a generation of the read model holds."""

    learning_instances: int
    registrations: int

    def covers(self, other: ModelSize) -> bool:
        return (
            self.learning_instances >= other.learning_instances
            and self.registrations >= other.registrations
        )


async def model_size(redis: Redis, keys: ReadModelKeys) -> ModelSize:
    """Count the learning instances and registrations of one generation."""
    lis = regs = 0
    async for raw in redis.scan_iter(match=keys.pattern(), count=1000):
        key = raw.decode()
        if not keys.owns(key):
            continue
        if keys.parse_learning_instance(key) is not None:
            lis += 1
        elif keys.parse_registration(key) is not None:
            regs += 1
    return ModelSize(lis, regs)


async def _generation(redis: Redis, keys: ReadModelKeys) -> int:
    raw = await redis.get(keys.current_generation())
    return int(raw) if raw else 0


async def _new_generation(redis: Redis, keys: ReadModelKeys, live: int) -> int:
    new = int(await redis.incr(keys.generation_counter()))
    if new <= live:  # the counter was lost but the pointer was not
        new = live + 1
        await redis.set(keys.generation_counter(), new)
    return new


async def delete_generation(redis: Redis, keys: ReadModelKeys) -> int:
    """Delete a generation: its sentinels (every LI's and member's key) in a
    first pass, the rest in a second. A reader checks its slot's sentinel in
    the same script as it reads, so it never sees half a learning instance
    (infra/read_model/generation.py)."""
    deleted = 0
    for sentinels in (True, False):
        batch: list[bytes] = []
        async for raw in redis.scan_iter(match=keys.pattern(), count=1000):
            name = raw.decode()
            if keys.owns(name) and keys.is_sentinel(name) == sentinels:
                batch.append(raw)
            if len(batch) >= 1000:
                deleted += int(await redis.unlink(*batch))
                batch = []
        if batch:
            deleted += int(await redis.unlink(*batch))
    return deleted


def progress_bar(label: str) -> Callable[[int, int], None]:
    """A one-line text progress bar on stderr."""

    def show(done: int, total: int) -> None:
        width = 30
        share = done / total if total else 1.0
        filled = int(share * width)
        sys.stderr.write(
            f"\r{label:<10} [{'#' * filled}{'.' * (width - filled)}] "
            f"{share:6.1%} {done:,}/{total:,}"
        )
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


async def rebuild(
    settings: Settings,
    bootstrap: str,
    redis_url: str,
    *,
    flush: bool = False,
    show_progress: bool = True,
) -> RebuildReport:
    """Re-derive and write every read-model key (see the module's steps);
    with ``flush``, into a new generation that replaces the live one.

    Raises :class:`RebuildRefused` when the broker misreports end offsets, or
    when the new generation would hold less than the live one.
    """
    topics = TopicNames(settings.topic_prefix)
    catalog = Catalog()
    n_catalog = 0
    profile = profile_for(settings)
    security = kafka_client_kwargs(settings)
    try:
        await verify_broker(settings, bootstrap)
    except BrokerMisreportsOffsets as exc:
        raise RebuildRefused(
            f"{exc}; reading the topics to their reported end would miss "
            "records and build an incomplete read model"
        ) from exc
    async for record in read_topic(
        bootstrap,
        topics.catalog,
        profile,
        client_kwargs=security,
        on_progress=progress_bar("catalog") if show_progress else None,
    ):
        try:
            event = decode_event(record.value or b"")
        except (ValidationError, ValueError):
            continue  # dead-lettered by the worker
        if isinstance(event, LearningInstanceCreated | GoalDefined | ModuleTagged):
            catalog.apply(event)
            n_catalog += 1

    latest: dict[bytes, bytes] = {}
    async for record in read_topic(
        bootstrap,
        changelog_topic(settings),
        profile,
        client_kwargs=security,
        on_progress=progress_bar("state") if show_progress else None,
    ):
        if record.key is None:
            continue
        if record.value is None:
            latest.pop(record.key, None)  # a tombstone deletes the key
        else:
            latest[record.key] = record.value

    redis = redis_client(redis_url, cluster=settings.redis_cluster)
    base = ReadModelKeys()
    try:
        live = base.in_generation(await _generation(redis, base))
        if not flush:
            written, rows = await _write(redis, live, catalog, latest, show_progress)
            await mark_materialized(redis, _BY, live)
            # Running workers derive their part again: the changelog read
            # here can be behind their last batches (module docstring).
            await redis.incr(base.rebuilds())
            return RebuildReport(
                n_catalog, len(latest), rows, written, generation=live.generation
            )
        target = base.in_generation(await _new_generation(redis, base, live.generation))
        try:
            written, rows = await _write(redis, target, catalog, latest, show_progress)
            await mark_materialized(redis, _BY, target)
            before, after = (
                await model_size(redis, live),
                await model_size(redis, target),
            )
            if not after.covers(before):
                raise RebuildRefused(
                    f"the rebuilt read model would hold less than the live one "
                    f"({after.learning_instances} learning instances and "
                    f"{after.registrations} registrations instead of "
                    f"{before.learning_instances} and {before.registrations}): "
                    "the topics read are incomplete (a broker restarted empty? "
                    "another MASTERY_TOPIC_PREFIX or MASTERY_APP_ID?). The live "
                    "read model was left as it was"
                )
            switch = redis.register_script(SWITCH_LUA)
            switched = await switch(
                keys=[base.current_generation()],
                args=[str(live.generation), str(target.generation)],
            )
            if not switched:
                raise RebuildRefused(
                    "another rebuild switched the read model's generation "
                    "meanwhile; this one was discarded"
                )
        except BaseException:
            await delete_generation(redis, target)
            raise
        deleted = await delete_generation(redis, live)
    finally:
        await redis.aclose()
    return RebuildReport(
        n_catalog,
        len(latest),
        rows,
        written,
        generation=target.generation,
        keys_deleted=deleted,
    )


async def _write(
    redis: Redis,
    keys: ReadModelKeys,
    catalog: Catalog,
    latest: dict[bytes, bytes],
    show_progress: bool,
) -> tuple[int, int]:
    """Write every key of ``catalog`` and the states into ``keys``' generation;
    returns (keys written, rows)."""
    projector = RedisProjector(redis)
    written = rows = 0
    projection = Projection(keys)
    for li in catalog.learning_instances():
        projection.learning_instance(li)
    for goal in catalog.goals():
        projection.goal(goal, goal_template(goal, catalog), goal_names(goal, catalog))
    show = progress_bar("redis") if show_progress else None
    for i, raw in enumerate(latest.values(), 1):
        state = RegistrationState.from_bytes(raw)
        projection.registration(state)
        li_id = state.learning_instance_id
        for goal_id, row in derive_rows(state, catalog):
            projection.row(li_id, state.registration_id, goal_id, row)
        for goal_id, points in timelines(state):
            projection.history(li_id, state.registration_id, goal_id, points)
            rows += 1
        if len(projection) >= 5000:
            written += len(projection)
            await projector.write(projection)
            projection = Projection(keys)
        if show is not None and (i % 1000 == 0 or i == len(latest)):
            show(i, len(latest))
    written += len(projection)
    await projector.write(projection)
    return written, rows
