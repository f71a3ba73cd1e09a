"""``mastery rebuild``: re-materialize the Redis read model from Kafka.

The worker's state lives in its table's changelog topic (the latest value per
registration) and the catalog topic; this command reads both whole, derives
every key the workers would write, and writes them in pipelined chunks. It
does not need a running worker. Rows it writes reflect the changelog as read;
a worker running at the same time overwrites a registration's rows with its
next batch. (Workers also repair every row they own after each partition
assignment, so restarting them is the other way to restore Redis.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError
from redis.asyncio import Redis

from app.projector import Projection, RedisProjector
from infra.broker import profile_for
from infra.kafka_security import kafka_client_kwargs
from infra.settings import Settings
from infra.topic_reader import read_topic
from infra.topics import TopicNames
from processors.catalog import Catalog
from processors.registration import RegistrationState
from processors.rows import derive_rows, goal_template
from schemas.events import (
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    decode_event,
)
from schemas.read_model import ReadModelKeys

__all__ = ["RebuildReport", "changelog_topic", "progress_bar", "rebuild"]


def changelog_topic(settings: Settings) -> str:
    """Faust's changelog topic of the worker's ``registration-state`` table."""
    return f"{settings.worker_id}-registration-state-changelog"


@dataclass(frozen=True, slots=True)
class RebuildReport:
    catalog_events: int
    registrations: int
    rows: int
    keys_written: int


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
    """Re-derive and write every read-model key; optionally FLUSHDB first."""
    topics = TopicNames(settings.topic_prefix)
    catalog = Catalog()
    n_catalog = 0
    profile = profile_for(settings)
    security = kafka_client_kwargs(settings)
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

    redis = Redis.from_url(redis_url)
    projector = RedisProjector(redis)
    keys = ReadModelKeys()
    written = rows = 0
    try:
        if flush:
            await redis.flushdb()
        projection = Projection(keys)
        for li in catalog.learning_instances():
            projection.learning_instance(li)
        for goal in catalog.goals():
            projection.goal(goal, goal_template(goal, catalog))
        show = progress_bar("redis") if show_progress else None
        for i, raw in enumerate(latest.values(), 1):
            state = RegistrationState.from_bytes(raw)
            projection.registration(state)
            for goal_id, row in derive_rows(state, catalog):
                projection.row(state.registration_id, goal_id, row)
                rows += 1
            if len(projection) >= 5000:
                written += len(projection)
                await projector.write(projection)
                projection = Projection(keys)
            if show is not None and (i % 1000 == 0 or i == len(latest)):
                show(i, len(latest))
        written += len(projection)
        await projector.write(projection)
    finally:
        await redis.aclose()
    return RebuildReport(
        catalog_events=n_catalog,
        registrations=len(latest),
        rows=rows,
        keys_written=written,
    )
