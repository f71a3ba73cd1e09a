"""A crash-only guard for records Faust's fetch loop skips.

Verified on faust-streaming 0.15.3, aiokafka 0.14.0, Apache Kafka 4.4.0
(docs/upstream/README.md names its test;
docs/upstream/faust-read-offset-skip.md the draft for upstream).

- :class:`SkipGuard`: Faust drops records it fetched when a rebalance begins
  and seeks back to the committed offsets, but its fetch loop then also drops
  every record below the highest offset it delivered before (its "read
  offset"), which a prefetched record of the old generation can leave too high
  (faust-streaming issues #216, #221). The skipped offsets would then be
  committed by the acks of later records and never applied. So after each
  assignment the first event of a partition must be the record at the group's
  committed offset (or the log's first record), and every later one the record
  after the previous one. A larger offset is checked by reading the partition
  from the expected offset (a real Kafka may have gaps, e.g. a transaction's
  control records); if records were skipped, :class:`RecordsSkipped` ends the
  worker without acking the batch, and its restart reads from the committed
  offset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AIOTopicPartition
from aiokafka.errors import KafkaError

from app.worker.faust_corrections.exit_policy import RecordsSkipped
from infra.broker import BrokerProfile

__all__ = ["GroupProbes", "SkipGuard"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupProbes:
    """How the guards reach the broker, as the worker's consumer group."""

    bootstrap: str
    group_id: str
    profile: BrokerProfile
    #: Security arguments (:mod:`infra.kafka_security`).
    client_kwargs: dict[str, Any] = field(default_factory=dict)

    def new(self) -> AIOKafkaConsumer:
        """A consumer that reads the group's committed offsets and, by manual
        assignment, records; it never joins the group or commits."""
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            **self.client_kwargs,
        )

    async def check_access(self, topic: str) -> None:
        """Raise the broker's ``GroupAuthorizationFailedError`` (or
        ``TopicAuthorizationFailedError``) unless this principal may use the
        group and describe ``topic``. Run before Faust starts: its consumer
        keeps such an error pending and waits for an assignment forever,
        without a word (faust-streaming 0.15.3, aiokafka 0.14)."""
        probe = self.new()
        await probe.start()
        try:
            await probe.committed(AIOTopicPartition(topic, 0))
        finally:
            await probe.stop()


class SkipGuard:
    """Checks that no record of a source partition is skipped (module docstring)."""

    def __init__(self, probes: GroupProbes):
        self.probes = probes
        #: Next offset expected per source partition since the last assignment.
        self._next: dict[tuple[str, int], int] = {}
        self._probe: AIOKafkaConsumer | None = None

    def reset(self) -> None:
        """A new assignment: the next event of each partition is checked anew."""
        self._next.clear()

    async def stop(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            await probe.stop()

    async def check(self, positions: Iterable[tuple[str, int, int]]) -> None:
        """``positions``: (topic, partition, offset) of a batch, in order."""
        expected = self._next
        for topic, partition, offset in positions:
            tp = (topic, partition)
            want = expected.get(tp)
            if want is None or offset > want:
                await self._or_restart(tp, offset, want)
            if want is None or offset >= want:
                expected[tp] = offset + 1

    async def _or_restart(
        self, tp: tuple[str, int], offset: int, want: int | None
    ) -> None:
        topic, partition = tp
        try:
            skipped = await asyncio.wait_for(
                self._skipped_before(AIOTopicPartition(topic, partition), offset, want),
                30.0,
            )
        except (TimeoutError, KafkaError) as exc:
            skipped = f"could not check ({exc!r})"
        if skipped:
            raise RecordsSkipped(
                f"event {topic}/{partition} at offset {offset}, but {skipped}"
            )

    async def _skipped_before(
        self, tp: AIOTopicPartition, offset: int, want: int | None = None
    ) -> str:
        """Why records before ``offset`` were skipped, or "" when none were.

        ``want``: the offset expected next; None for the first event after an
        assignment, which must be the group's committed offset (or the first
        record in the log).
        """
        probe = self._probe
        if probe is None:
            probe = self._probe = self.probes.new()
            await probe.start()
        if want is None:
            committed = await probe.committed(tp)
            if committed is None:
                committed = (await probe.beginning_offsets([tp]))[tp]
        else:
            committed = want
        if offset <= committed:
            return ""
        probe.assign([tp])
        try:
            probe.seek(tp, committed)
            batch = await probe.getmany(tp, timeout_ms=5000, max_records=1)
        finally:
            probe.assign([])
        records = batch.get(tp, [])
        if not records:
            return f"nothing could be read from offset {committed}"
        if records[0].offset < offset:
            return f"the log has offset {records[0].offset} (expected: {committed})"
        return ""
