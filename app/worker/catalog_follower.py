"""Every worker's copy of the catalog: the catalog topic, read whole, in memory.

Learning instances, goals and module tags are small reference data needed to
evaluate any registration, so each worker reads the single-partition catalog
topic from the beginning (no consumer group) and folds it into a
:class:`processors.catalog.Catalog`. Kafka stays the source of truth: a restart
simply replays it. The worker does not process registration events until the
follower has caught up with the topic's end (:attr:`CatalogFollower.ready`).

The follower is the topic's only reader. It keeps the records it refused until
the worker holding the dead-letter duty has sent them
(app/worker/catalog_dead_letters.py); its consumer commits that duty's position under
its own group id, which no consumer joins.
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
from processors import batch
from processors.catalog import Catalog
from schemas.events import (
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    decode_event,
)

__all__ = ["CatalogFollower", "CatalogListener"]

log = logging.getLogger(__name__)

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
        group_id: str | None = None,
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
        self._group_id = group_id
        self._started = asyncio.Event()
        self.rejected = 0
        #: Refused records not yet known to be dead-lettered, in log order.
        self._rejections: OrderedDict[tuple[int, int], tuple[batch.Record, str]] = (
            OrderedDict()
        )

    async def run(self) -> None:
        """Consume forever (until cancelled)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            # Only to commit the dead-letter duty's position: partitions are
            # assigned by hand, so the group is never joined.
            group_id=self._group_id,
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
            self._started.set()
            while True:
                batches = await consumer.getmany(*tps, timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        await self._apply(
                            batch.Record(
                                record.topic,
                                record.partition,
                                record.offset,
                                record.key,
                                record.value,
                            )
                        )
                for tp in tps:
                    self._positions[tp] = await consumer.position(tp)
                if not self.ready.is_set() and self._reached(initial_end):
                    log.info("catalog caught up at %s", self._positions)
                    self.ready.set()
                async with self._advanced:
                    self._advanced.notify_all()
        finally:
            self._consumer = None
            self._started.clear()
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _reached(self, ends: dict[TopicPartition, int]) -> bool:
        return all(self._positions.get(tp, 0) >= end for tp, end in ends.items())

    async def _apply(self, record: batch.Record) -> None:
        try:
            event = decode_event(record.value or b"")
            if not isinstance(
                event, LearningInstanceCreated | GoalDefined | ModuleTagged
            ):
                raise ValueError(f"{event.type} does not belong on this topic")
        except (ValidationError, ValueError) as exc:
            self._refuse(record, batch.rejection_reason(exc))
            return
        existed = self._exists(event)
        change = self.catalog.apply(event)
        if change.rejected is not None:
            # Refused by ownership (processors/catalog.py).
            self._refuse(record, change.rejected)
            return
        if self._listener is not None:
            changed = not existed or change.redefined
            await self._listener(event, changed, self.ready.is_set())

    def _refuse(self, record: batch.Record, reason: str) -> None:
        self.rejected += 1
        log.debug("catalog record at offset %d refused: %s", record.offset, reason)
        self._rejections[(record.partition, record.offset)] = (record, reason)

    # -- for the dead-letter duty (app/worker/catalog_dead_letters.py) -----

    def positions(self) -> dict[int, int]:
        """Each partition's next offset to apply: everything before it is in
        :attr:`catalog` (or refused)."""
        return {tp.partition: offset for tp, offset in self._positions.items()}

    def refused(
        self, since: Mapping[int, int], until: Mapping[int, int]
    ) -> list[tuple[batch.Record, str]]:
        """The records refused at offsets in ``[since, until)`` of each
        partition, with why, in log order."""
        return [
            kept
            for (partition, offset), kept in self._rejections.items()
            if since.get(partition, 0) <= offset < until.get(partition, 0)
        ]

    def forget_refused(self, below: Mapping[int, int]) -> None:
        """Drop the refused records below ``below``: they are dead-lettered."""
        for partition, offset in list(self._rejections):
            if offset < below.get(partition, 0):
                del self._rejections[(partition, offset)]

    async def committed(self) -> dict[int, int | None]:
        """The dead-letter duty's committed position of each partition (None:
        never committed)."""
        await self._started.wait()
        consumer = self._consumer
        assert consumer is not None and self._group_id is not None
        return {
            tp.partition: await consumer.committed(tp) for tp in list(self._positions)
        }

    async def commit(self, positions: Mapping[int, int]) -> None:
        """Commit ``positions`` as the dead-letter duty's position."""
        await self._started.wait()
        consumer = self._consumer
        assert consumer is not None and self._group_id is not None
        await consumer.commit(
            {TopicPartition(self._topic, p): o for p, o in positions.items()}
        )

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
