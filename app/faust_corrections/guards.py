"""Crash-only guards for two Faust behaviours that lose or stall processing.

Both verified on faust-streaming 0.15.3 with aiokafka 0.14
(app/faust_corrections/__init__.py).

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
- :class:`Watchdog`: after a double group join at start-up Faust's stream
  sometimes never resumes, with no error. When events wait (end offset >
  committed offset on this worker's partitions) and no batch was processed for
  ``stall_timeout_s``, :class:`Stalled` ends the worker so its supervisor
  restarts it; uncommitted events are then processed again, idempotently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AIOTopicPartition
from aiokafka.errors import KafkaError

from app.faust_corrections.restart import RecordsSkipped, Stalled
from infra.broker import BrokerProfile, end_offsets

__all__ = ["GroupProbes", "SkipGuard", "Watchdog"]

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

    def __init__(self, app: Any, probes: GroupProbes):
        self._app = app
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
                f"event {topic}/{partition} at offset {offset}, but {skipped} "
                f"(Faust's read offset: {self._faust_read_offset(topic, partition)})"
            )

    def _faust_read_offset(self, topic: str, partition: int) -> object:
        read_offsets = getattr(self._app.consumer, "_read_offset", {})
        return next(
            (
                o
                for tp, o in read_offsets.items()
                if (tp.topic, tp.partition) == (topic, partition)
            ),
            None,
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


class Watchdog:
    """Ends a worker whose stream stalled while events wait (module docstring)."""

    def __init__(
        self, app: Any, probes: GroupProbes, *, topic: str, stall_timeout_s: float
    ):
        self._app = app
        self.probes = probes
        self._topic = topic
        self.stall_timeout_s = stall_timeout_s
        self.last_progress = time.monotonic()

    def progress(self) -> None:
        self.last_progress = time.monotonic()

    async def run(self) -> None:
        """Watch until the process ends; raises :class:`Stalled`."""
        timeout = self.stall_timeout_s
        probe = self.probes.new()
        await probe.start()
        busy_since: float | None = None
        try:
            while True:
                await asyncio.sleep(min(5.0, timeout / 3))
                now = time.monotonic()
                if self._app.rebalancing or getattr(self._app, "in_recovery", False):
                    # Rebalancing or recovering is progress, unless it never ends.
                    busy_since = busy_since or now
                    if now - busy_since < 4 * timeout:
                        self.last_progress = now
                        continue
                else:
                    busy_since = None
                idle = now - self.last_progress
                if idle < timeout:
                    continue
                try:
                    lag = await asyncio.wait_for(self._lag(probe), 15.0)
                except (TimeoutError, KafkaError) as exc:
                    log.warning("watchdog could not read the lag: %r", exc)
                    continue
                if lag > 0:
                    raise Stalled(f"no batch for {idle:.0f} s while {lag} events wait")
                self.last_progress = time.monotonic()  # idle, and rightly so
        finally:
            await probe.stop()

    async def _lag(self, probe: AIOKafkaConsumer) -> int:
        assigned = [
            AIOTopicPartition(tp.topic, tp.partition)
            for tp in self._app.consumer.assignment()
            if tp.topic == self._topic
        ]
        if not assigned:
            # A worker left with no partitions after a rebalance is idle while
            # the group's events may wait: judge by the whole topic.
            partitions = probe.partitions_for_topic(self._topic)
            assigned = [
                AIOTopicPartition(self._topic, p) for p in sorted(partitions or ())
            ]
            if not assigned:
                return 0
        ends = await end_offsets(probe, assigned)
        lag = 0
        for tp in assigned:
            committed = await probe.committed(tp)
            lag += max(0, ends[tp] - (committed or 0))
        return lag
