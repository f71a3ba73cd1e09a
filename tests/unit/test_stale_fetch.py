"""The fetch loop delivers only records fetched since the last seek, and acks
as a gap only offsets the partition's own fetches passed over.

Faust's fetch loop (``Consumer._drain_messages``) decides delivery and gaps
by its "read offset", which a seek resets in a separate step from the seek
itself. On Apache Kafka, records fetched before a seek were delivered after
it and the records fetched again below them were dropped, or a seek landing
mid-batch made the offsets between its reset read offset and the batch's
next record be acked as a gap (faust-streaming #216/#221;
docs/upstream/faust-read-offset-skip.md). ``_Consumer.getmany`` drops stale
records by aiokafka's position, clears the read offset and acks only real
gaps. These tests drive Faust's own ``getmany`` with a stand-in consumer
thread; ``pytest --without stale-fetch`` puts Faust's back and they fail.
The scenario on the broker: tests/integration/test_faust_corrections.py::
test_no_record_is_skipped_without_the_guard.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka.structs import ConsumerRecord
from faust.types import TP

from app.worker.faust_corrections.transport import FetchedPositions, MasteryApp
from infra.broker import KAFKA

TOPIC = "registrations"
P0 = TP(TOPIC, 0)


class _State:
    """aiokafka's TopicPartitionState: a position."""

    def __init__(self, position: int | None):
        self._position = position


class _Assignment:
    def __init__(self, positions: dict[TP, int]):
        self.states = {tp: _State(p) for tp, p in positions.items()}

    @property
    def tps(self) -> set[TP]:
        return set(self.states)

    def state_value(self, tp: TP) -> _State | None:
        return self.states.get(tp)


class _Kafka:
    """An AIOKafkaConsumer as far as positions go."""

    def __init__(self, positions: dict[TP, int]):
        self._subscription = SimpleNamespace(
            subscription=SimpleNamespace(assignment=_Assignment(positions))
        )

    @property
    def assignment(self) -> _Assignment:
        return self._subscription.subscription.assignment  # type: ignore[no-any-return]

    def seek(self, tp: TP, offset: int) -> None:
        self.assignment.states[tp]._position = offset

    def reassign(self, positions: dict[TP, int]) -> None:
        self._subscription.subscription = SimpleNamespace(
            assignment=_Assignment(positions)
        )


def _record(tp: TP, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        timestamp=1_700_000_000_000,
        timestamp_type=0,
        key=b"k",
        value=b"v",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=1,
        headers=(),
    )


class _Thread:
    """Stands in for the consumer thread: each fetch hands over the given
    offsets from the partition's position, as ``_fetch_records`` does."""

    def __init__(
        self, consumer: Any, kafka: _Kafka, fetches: list[dict[TP, list[int]]]
    ):
        self.consumer = consumer
        self.kafka = kafka
        self.fetches = fetches

    async def getmany(self, active_partitions: Any, timeout: float) -> dict[TP, Any]:
        fetched = FetchedPositions.begin(self.kafka)
        offsets = self.fetches.pop(0) if self.fetches else {}
        for tp, numbers in offsets.items():
            self.kafka.assignment.states[tp]._position = numbers[-1] + 1
        fetched.taken(offsets)
        self.consumer.fetched_positions = fetched
        return {
            tp: [_record(tp, o) for o in numbers] for tp, numbers in offsets.items()
        }

    def highwater(self, tp: TP) -> int:
        return 0


def _consumer(positions: dict[TP, int], fetches: list[dict[TP, list[int]]]) -> Any:
    app = MasteryApp(
        "stale-fetch-test",
        broker="kafka://127.0.0.1:9",
        profile=KAFKA,
        web_enabled=False,
    )
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    consumer = app.consumer
    kafka = _Kafka(positions)
    consumer._thread = _Thread(consumer, kafka, fetches)
    consumer._set_active_tps(set(positions))
    gaps: list[tuple[TP, int, int]] = []

    async def add_gap(tp: TP, offset_from: int, offset_to: int) -> None:
        gaps.append((tp, offset_from, offset_to))

    consumer._add_gap = add_gap
    consumer.gaps = gaps
    consumer.kafka = kafka
    return consumer


async def _deliver(consumer: Any, during: Any = None) -> list[int]:
    """One turn of Faust's fetch loop (``Consumer._drain_messages``, its read
    offset and gap rules as in faust-streaming 0.15.3): the offsets it hands
    to the streams. ``during(n, offset)`` runs while the n-th record is being
    handed over, as a seek in the consumer thread may."""
    delivered: list[int] = []
    read_offset = consumer._read_offset
    async for tp, message in consumer.getmany(timeout=0.01):
        offset = message.offset
        r_offset = read_offset[tp]
        if r_offset is None or offset >= r_offset:
            gap = offset - (r_offset or 0)
            if gap > 1 and r_offset:
                await consumer._add_gap(tp, r_offset + 1, offset)
            delivered.append(offset)
            if during is not None:
                during(len(delivered), offset)
            read_offset[tp] = offset
    return delivered


async def test_records_fetched_before_a_seek_are_not_delivered_after_it() -> None:
    consumer = _consumer({P0: 100}, [{P0: list(range(100, 110))}, {P0: [103, 104]}])

    def seek_back(n: int, offset: int) -> None:
        if n == 3:  # the group's committed offset is 103
            consumer.kafka.seek(P0, 103)
            consumer._read_offset[P0] = 103  # as Faust's perform_seek does

    assert await _deliver(consumer, seek_back) == [100, 101, 102]
    assert consumer.stale_records_dropped == 7
    # The next fetch starts at the seek and is delivered in full, though
    # Faust's read offset was left at 102 by the last record delivered.
    assert await _deliver(consumer) == [103, 104]
    assert consumer.gaps == []


async def test_a_new_assignment_makes_the_records_in_hand_stale() -> None:
    consumer = _consumer({P0: 50}, [{P0: [50, 51, 52, 53]}])

    def rebalance(n: int, offset: int) -> None:
        if n == 1:
            consumer.kafka.reassign({P0: 51})

    assert await _deliver(consumer, rebalance) == [50]
    assert consumer.stale_records_dropped == 3


async def test_offsets_the_fetches_passed_over_are_still_acked_as_gaps() -> None:
    # A transaction's control record at 12, compaction removed 20-24: as with
    # Faust's rules (which also cover the record after the hole), the holes
    # are acked, so commits move past them.
    consumer = _consumer({P0: 10}, [{P0: [10, 11, 13]}, {P0: [20, 25, 26]}])
    delivered = await _deliver(consumer) + await _deliver(consumer)
    assert delivered == [10, 11, 13, 20, 25, 26]
    covered = {o for _, start, end in consumer.gaps for o in range(start, end + 1)}
    assert covered - set(delivered) == {12, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24}


async def test_a_seek_back_mid_batch_acks_no_gap_over_what_it_asks_for_again() -> None:
    # The seek lands while record 205 is delivered; Faust's own loop would
    # meet the next record (206) with the read offset the seek reset (200)
    # and ack 201-206 as a gap, though the rebalance had cleared them.
    consumer = _consumer({P0: 200}, [{P0: list(range(200, 210))}, {P0: [200, 201]}])

    def seek_back(n: int, offset: int) -> None:
        if offset == 205:
            consumer.kafka.seek(P0, 200)
            consumer._read_offset[P0] = 200  # as Faust's perform_seek does

    assert await _deliver(consumer, seek_back) == list(range(200, 206))
    assert await _deliver(consumer) == [200, 201]
    assert consumer.gaps == []
