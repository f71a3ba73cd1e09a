"""Every worker's copy of the catalog: the catalog topic, read whole, in memory.

Learning instances, goals and module tags are small reference data needed to
evaluate any registration, so each worker reads the single-partition catalog
topic from the beginning (no consumer group) and folds it into a
:class:`processors.catalog.Catalog`. Kafka stays the source of truth: a restart
simply replays it. The worker does not process registration events until the
follower has caught up with the topic's end (:attr:`CatalogFollower.ready`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from infra.broker import BrokerProfile, end_offsets, topic_partitions
from processors.catalog import Catalog
from schemas.events import (
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    decode_event,
)

__all__ = ["CatalogFollower", "CatalogListener"]

log = logging.getLogger(__name__)

#: Ownership refusals remembered for the catalog agent to dead-letter.
_REJECTIONS_KEPT = 10_000

CatalogEventT = LearningInstanceCreated | GoalDefined | ModuleTagged
#: Called after each applied catalog event with the event, whether it changed
#: the catalog (new, or a different definition) and whether the follower had
#: already caught up (live) when it was applied.
CatalogListener = Callable[[CatalogEventT, bool, bool], Awaitable[None]]


class CatalogFollower:
    """Tails the catalog topic into an in-memory :class:`Catalog`."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        profile: BrokerProfile,
        listener: CatalogListener | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._client_kwargs = dict(client_kwargs or {})
        self.catalog = Catalog()
        self.ready = asyncio.Event()
        self._bootstrap = bootstrap
        self._topic = topic
        self._profile = profile
        self._listener = listener
        self._positions: dict[TopicPartition, int] = {}
        self._advanced = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self.rejected = 0
        self._rejections: OrderedDict[tuple[int, int], str] = OrderedDict()

    async def run(self) -> None:
        """Consume forever (until cancelled)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            **self._client_kwargs,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            # The topic is created with one partition (infra.broker), but a
            # broker may auto-create it wider: read every partition there is.
            partitions = await topic_partitions(
                self._bootstrap, self._topic, self._client_kwargs
            ) or {0}
            tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            initial_end = await end_offsets(consumer, tps)
            self._positions = dict.fromkeys(tps, 0)
            while True:
                batches = await consumer.getmany(*tps, timeout_ms=200)
                for tp_, records in batches.items():
                    for record in records:
                        await self._apply(record.value, tp_.partition, record.offset)
                for tp in tps:
                    self._positions[tp] = await consumer.position(tp)
                if not self.ready.is_set() and self._reached(initial_end):
                    log.info("catalog caught up at %s", self._positions)
                    self.ready.set()
                async with self._advanced:
                    self._advanced.notify_all()
        finally:
            self._consumer = None
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _reached(self, ends: dict[TopicPartition, int]) -> bool:
        return all(self._positions.get(tp, 0) >= end for tp, end in ends.items())

    async def _apply(self, value: bytes | None, partition: int, offset: int) -> None:
        try:
            event = decode_event(value or b"")
        except (ValidationError, ValueError) as exc:
            # The catalog agent (app.worker, one per cluster) dead-letters it;
            # every worker's follower only skips it.
            self.rejected += 1
            log.debug("catalog record at offset %d is invalid: %s", offset, exc)
            return
        if not isinstance(event, LearningInstanceCreated | GoalDefined | ModuleTagged):
            self.rejected += 1
            log.debug("catalog record at offset %d is a %s", offset, event.type)
            return
        existed = self._exists(event)
        change = self.catalog.apply(event)
        if change.rejected is not None:
            # Refused by ownership (processors/catalog.py): the catalog agent
            # dead-letters it with this reason (rejection_at).
            self._rejections[(partition, offset)] = change.rejected
            while len(self._rejections) > _REJECTIONS_KEPT:
                self._rejections.popitem(last=False)
            return
        if self._listener is not None:
            changed = not existed or change.redefined
            await self._listener(event, changed, self.ready.is_set())

    def rejection_at(self, partition: int, offset: int) -> str | None:
        """Why the catalog refused the record at (partition, offset), if it did
        (once applied; the most recent :data:`_REJECTIONS_KEPT` are kept)."""
        return self._rejections.get((partition, offset))

    def _exists(self, event: CatalogEventT) -> bool:
        if isinstance(event, GoalDefined):
            return self.catalog.goal(event.goal_id) is not None
        if isinstance(event, ModuleTagged):
            return self.catalog.module(event.partner_id, event.module_id) is not None
        return self.catalog.learning_instance(event.learning_instance_id) is not None

    async def catch_up(self, timeout_s: float) -> bool:
        """Wait until everything on the topic *now* has been applied.

        Used when a registration event names a module or goal this worker has
        not seen yet: the catalog may simply be a few milliseconds behind.
        Returns False on timeout.
        """
        consumer = self._consumer
        if consumer is None:
            return False
        ends = await end_offsets(consumer, list(self._positions))
        return await self.wait_for(ends, timeout_s)

    async def wait_for_record(
        self, partition: int, offset: int, timeout_s: float
    ) -> bool:
        """Wait until the record at ``offset`` of ``partition`` has been applied."""
        return await self.wait_for(
            {TopicPartition(self._topic, partition): offset + 1}, timeout_s
        )

    async def wait_for(self, ends: dict[TopicPartition, int], timeout_s: float) -> bool:
        """Wait until every partition's position reaches its given end."""

        async def _wait() -> None:
            async with self._advanced:
                await self._advanced.wait_for(lambda: self._reached(ends))

        try:
            await asyncio.wait_for(_wait(), timeout_s)
        except TimeoutError:
            return False
        return True
