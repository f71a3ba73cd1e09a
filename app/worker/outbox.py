"""What the worker sends to Kafka besides its states: dead letters, status
changes, and records forwarded to the partition of their key.

Sends go straight to aiokafka through ``Topic.send`` (not Faust's producer
buffer). A batch's dead letters and status changes are not awaited by the
batch: their acknowledgements go to the next checkpoint (app/worker/checkpoint.py,
step 3). Forwarded records are awaited before the batch ends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

from app.metrics import WorkerMetrics
from app.worker.checkpoint import acknowledged
from processors import batch
from schemas.dead_letter import DeadLetter
from schemas.transitions import StatusChanged

__all__ = ["Outbox", "dead_letter"]

log = logging.getLogger(__name__)


def dead_letter(record: batch.Record, reason: str) -> DeadLetter:
    """The dead letter of ``record`` (logged with its coordinates)."""
    log.warning(
        "dead-letter %s/%d/%d: %s",
        record.topic,
        record.partition,
        record.offset,
        reason[:500],
        extra={
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": (record.key or b"")[:128].decode(errors="replace"),
            "outcome": "rejected",
        },
    )
    return DeadLetter.of(
        reason[:2000],
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        rejected_at=datetime.now(UTC),
    )


class Outbox:
    """The worker's sends (Faust topics of its app)."""

    def __init__(
        self,
        *,
        dead_letters: Any,
        status_changes: Any,
        registration_events: Any,
        metrics: WorkerMetrics,
    ) -> None:
        self._dead_letters = dead_letters
        self._status_changes = status_changes
        self._registration_events = registration_events
        self._metrics = metrics

    async def send(
        self, dead: Sequence[DeadLetter], changes: Sequence[StatusChanged]
    ) -> list[Awaitable[Any]]:
        """Send dead letters and status changes; their acknowledgements."""
        if not dead and not changes:
            return []
        self._metrics.dead_letters.inc(len(dead))
        futures = [
            await self._dead_letters.send(
                key=d.dlq_key.encode(), value=d.model_dump_json().encode()
            )
            for d in dead
        ]
        # Keyed by registration: one registration's changes land on one
        # partition in the order they were sent (the fold's log order).
        futures.extend(
            [
                await self._status_changes.send(
                    key=c.registration_id.encode(), value=c.to_bytes()
                )
                for c in changes
            ]
        )
        return futures

    async def send_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        """Dead letters, acknowledged by the broker before this returns."""
        await acknowledged(await self.send(dead, ()))

    async def forward(self, misplaced: Sequence[tuple[batch.Record, int]]) -> None:
        """Send records a producer put on another partition than their key's to
        that partition (acknowledged before this returns); they are applied
        when read there. A crash may forward one twice: attempt ids and
        creation's idempotency make that harmless."""
        futures = [
            await self._registration_events.send(
                key=record.key, value=record.value, partition=home
            )
            for record, home in misplaced
        ]
        for fut in futures:
            await fut
        self._metrics.events.labels("forwarded").inc(len(misplaced))
        log.info("forwarded %d records to the partition of their key", len(misplaced))
