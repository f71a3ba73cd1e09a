"""An OffsetFetch answered by a former coordinator is retried, not read as
"no committed offset" (app/worker/faust_corrections/offsets.py).

A broker that is not the group's coordinator answers OffsetFetch v2+ with a
top-level ``NOT_COORDINATOR`` and no partitions. aiokafka 0.14 reads only the
per-partition codes, so ``fetch_committed_offsets`` returned ``{}`` and
``AIOKafkaConsumer.committed`` None. Here aiokafka's own retry loop runs
against a stand-in for the brokers: the former coordinator answers first,
the new one after the lookup. ``pytest --without offset-fetch`` puts
aiokafka's method back and these tests fail.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import errors as Errors
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.commit import OffsetFetchResponse_v1, OffsetFetchResponse_v3
from aiokafka.structs import OffsetAndMetadata, TopicPartition

import app.worker.faust_corrections  # noqa: F401  (installs the correction)

TP = TopicPartition("registration-events", 2)
NOT_COORDINATOR = Errors.NotCoordinatorForGroupError.errno
LOAD_IN_PROGRESS = Errors.GroupLoadInProgressError.errno


def _answer(offset: int, error_code: int = 0) -> OffsetFetchResponse_v3:
    partitions = [] if error_code else [(TP.partition, offset, "", 0)]
    return OffsetFetchResponse_v3(
        throttle_time_ms=0,
        topics=[(TP.topic, partitions)] if partitions else [],
        error_code=error_code,
    )


class _Coordinator(GroupCoordinator):
    """aiokafka's GroupCoordinator, its network replaced by ``answers``: what
    each node answers to OffsetFetch, in turn."""

    def __init__(self, answers: dict[int, list[Any]]) -> None:  # no super(): no client
        self.group_id = "g"
        self.coordinator_id: int | None = 2  # the paused node, just resumed
        self._retry_backoff_ms = 1
        self._coordinator_lookup_lock = asyncio.Lock()
        self.answers = answers
        self.asked: list[int] = []
        self.lookups = 0

    async def ensure_coordinator_known(self) -> None:
        if self.coordinator_id is None:
            self.lookups += 1
            self.coordinator_id = 1  # the new coordinator

    async def _send_req(self, request: Any) -> Any:
        assert self.coordinator_id is not None
        self.asked.append(self.coordinator_id)
        return self.answers[self.coordinator_id].pop(0)

    def coordinator_dead(self) -> None:
        self.coordinator_id = None


async def test_a_former_coordinator_s_answer_is_retried_at_the_new_one() -> None:
    coordinator = _Coordinator({2: [_answer(-1, NOT_COORDINATOR)], 1: [_answer(7334)]})

    offsets = await coordinator.fetch_committed_offsets([TP])

    assert offsets == {TP: OffsetAndMetadata(7334, "")}
    assert coordinator.asked == [2, 1] and coordinator.lookups == 1


async def test_a_load_in_progress_is_retried_at_the_same_node() -> None:
    coordinator = _Coordinator(
        {2: [_answer(-1, LOAD_IN_PROGRESS), _answer(-1, LOAD_IN_PROGRESS), _answer(55)]}
    )

    assert await coordinator.fetch_committed_offsets([TP]) == {
        TP: OffsetAndMetadata(55, "")
    }
    assert coordinator.asked == [2, 2, 2] and coordinator.lookups == 0


async def test_no_committed_offset_is_still_none_and_v1_answers_still_parse() -> None:
    none_yet = _Coordinator({2: [_answer(-1)]})
    assert await none_yet.fetch_committed_offsets([TP]) == {}

    v1 = _Coordinator(
        {2: [OffsetFetchResponse_v1(topics=[(TP.topic, [(TP.partition, 9, "m", 0)])])]}
    )
    assert await v1.fetch_committed_offsets([TP]) == {TP: OffsetAndMetadata(9, "m")}


async def test_a_group_level_error_that_cannot_be_retried_is_raised() -> None:
    denied = _Coordinator(
        {2: [_answer(-1, Errors.GroupAuthorizationFailedError.errno)]}
    )
    with pytest.raises(Errors.GroupAuthorizationFailedError):
        await denied.fetch_committed_offsets([TP])
