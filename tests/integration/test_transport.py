"""The skip guard's check of a batch against the log, on the real broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from app.devstack.embedded_kafka import EmbeddedKafka
from app.worker.faust_corrections.exit_policy import RecordsSkipped
from app.worker.faust_corrections.guards import GroupProbes, SkipGuard
from infra.broker import KAFKA, create_topics

pytestmark = pytest.mark.integration


async def _topic_with_records(bootstrap: str, prefix: str, partitions: int) -> str:
    """A new topic whose partitions get 10 records, round robin, in order."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [NewTopic(topic, partitions, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(10 * partitions):
            await producer.send_and_wait(topic, b"%d" % i, partition=i % partitions)
    finally:
        await producer.stop()
    return topic


async def _skipped(bootstrap: str) -> dict[str, str]:
    topic = await _topic_with_records(bootstrap, "gap", 2)
    group = f"w-{uuid.uuid4().hex[:8]}"
    committer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await committer.start()
    try:
        committer.assign([TopicPartition(topic, 0)])
        await committer.commit({TopicPartition(topic, 0): 3})
    finally:
        await committer.stop()
    guard = SkipGuard(GroupProbes(bootstrap, group, KAFKA))
    check = guard._skipped_before
    try:
        found = {
            "p0 at committed": await check(TopicPartition(topic, 0), 3),
            "p0 past committed": await check(TopicPartition(topic, 0), 4),
            "p1 first record": await check(TopicPartition(topic, 1), 0),
            "p1 past first": await check(TopicPartition(topic, 1), 2),
            "p1 next": await check(TopicPartition(topic, 1), 3, 3),
            "p1 gap": await check(TopicPartition(topic, 1), 4, 2),
        }
        # The guard's check of a batch ends the worker on such a gap.
        await guard.check([(topic, 0, 3), (topic, 0, 4)])
        try:
            await guard.check([(topic, 0, 6)])
        except RecordsSkipped as exc:
            found["check"] = str(exc)
        return found
    finally:
        await guard.stop()


def test_a_first_event_past_the_committed_offset_is_caught(
    kafka_server: EmbeddedKafka,
) -> None:
    found = asyncio.run(_skipped(kafka_server.bootstrap_servers))
    assert found["p0 at committed"] == ""
    assert found["p1 first record"] == ""  # nothing committed: the first record
    assert "the log has offset 3 (expected: 3)" in found["p0 past committed"]
    assert "the log has offset 0 (expected: 0)" in found["p1 past first"]
    assert found["p1 next"] == ""  # the record after the previous one
    assert "at offset 6" in found["check"]
    assert "the log has offset 2 (expected: 2)" in found["p1 gap"]
