"""The catalog dead-letter duty's bookkeeping (app/worker/catalog_dead_letters.py)
over a follower whose consumer is replaced by a dict of committed positions.
The whole path, on Apache Kafka with real workers, is
tests/reliability/test_catalog_reader.py."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from aiokafka import TopicPartition

from app.worker.catalog_dead_letters import CatalogDeadLetters
from app.worker.catalog_follower import CatalogFollower
from infra.broker import KAFKA
from processors import batch
from schemas.dead_letter import DeadLetter

TOPIC = "t.catalog.v1"


class _Follower(CatalogFollower):
    """A follower at given positions, its duty's commits kept in a dict."""

    def __init__(self, positions: Mapping[int, int], committed: dict[int, int]):
        super().__init__("unused:9092", TOPIC, profile=KAFKA)
        self._positions = {TopicPartition(TOPIC, p): o for p, o in positions.items()}
        self.commits: list[dict[int, int]] = []
        self._committed_now = committed
        self.ready.set()

    def refuse(self, offset: int) -> None:
        record = batch.Record(TOPIC, 0, offset, b"k", b"bad %d" % offset)
        self._refuse(record, f"refused {offset}")

    def advance(self, offset: int) -> None:
        self._positions[TopicPartition(TOPIC, 0)] = offset

    async def committed(self) -> dict[int, int | None]:
        return {
            tp.partition: self._committed_now.get(tp.partition)
            for tp in self._positions
        }

    async def commit(self, positions: Mapping[int, int]) -> None:
        self.commits.append(dict(positions))
        self._committed_now.update(positions)


class _Outbox:
    def __init__(self) -> None:
        self.sent: list[DeadLetter] = []

    async def send_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        self.sent.extend(dead)


def _duty(
    follower: _Follower,
    outbox: _Outbox,
    holds: list[bool],
    previous: dict[int, int] | None = None,
) -> CatalogDeadLetters:
    async def previous_position() -> dict[int, int]:
        return previous or {}

    return CatalogDeadLetters(
        follower,
        outbox,  # type: ignore[arg-type]
        holds_duty=lambda: holds[0],
        previous_position=previous_position,
    )


def _offsets(outbox: _Outbox) -> list[int]:
    return [letter.offset for letter in outbox.sent]


def test_the_holder_sends_what_was_refused_since_the_committed_position() -> None:
    follower, outbox = _Follower({0: 6}, {0: 3}), _Outbox()
    for offset in (1, 2, 4, 5):
        follower.refuse(offset)
    duty = _duty(follower, outbox, [True])
    assert asyncio.run(duty.run_once()) == 2
    assert _offsets(outbox) == [4, 5]
    assert [letter.reason for letter in outbox.sent] == ["refused 4", "refused 5"]
    assert follower.commits == [{0: 6}]
    assert follower.refused({}, {0: 10}) == []  # all below 6 forgotten

    # Nothing new: nothing sent, nothing committed again.
    assert asyncio.run(duty.run_once()) == 0
    assert follower.commits == [{0: 6}]


def test_a_duty_that_never_committed_starts_at_the_previous_position() -> None:
    follower, outbox = _Follower({0: 4}, {}), _Outbox()
    for offset in (1, 2, 3):
        follower.refuse(offset)
    duty = _duty(follower, outbox, [True], previous={0: 2})
    asyncio.run(duty.run_once())
    assert _offsets(outbox) == [2, 3]
    assert follower.commits == [{0: 4}]


def test_the_committed_position_never_goes_back() -> None:
    # The follower is behind what the duty committed (it has just started):
    # committing its position would send offsets 1..4 a second time later.
    follower, outbox = _Follower({0: 1}, {0: 5}), _Outbox()
    duty = _duty(follower, outbox, [True])
    asyncio.run(duty.run_once())
    assert follower.commits == []
    follower.refuse(3)  # dead-lettered by an earlier holder
    follower.refuse(6)
    follower.advance(7)
    asyncio.run(duty.run_once())
    assert _offsets(outbox) == [6]
    assert follower.commits == [{0: 7}]


def test_nothing_is_sent_before_the_follower_caught_up() -> None:
    follower, outbox = _Follower({0: 3}, {}), _Outbox()
    follower.refuse(1)
    follower.ready.clear()
    duty = _duty(follower, outbox, [True])
    asyncio.run(duty.run_once())
    assert outbox.sent == [] and follower.commits == []
    follower.ready.set()
    asyncio.run(duty.run_once())
    assert _offsets(outbox) == [1]


def test_a_worker_without_the_duty_sends_nothing_and_keeps_only_the_unsent() -> None:
    follower, outbox = _Follower({0: 6}, {0: 3}), _Outbox()
    for offset in (1, 2, 4):
        follower.refuse(offset)
    holds = [False]
    duty = _duty(follower, outbox, holds)
    asyncio.run(duty.run_once())
    assert outbox.sent == [] and follower.commits == []
    assert [r.offset for r, _ in follower.refused({}, {0: 10})] == [4]

    # It takes the duty over: it reads the committed position again.
    follower._committed_now[0] = 5  # another holder got further meanwhile
    holds[0] = True
    asyncio.run(duty.run_once())
    assert outbox.sent == []
    assert follower.commits == [{0: 6}]
