"""The catalog topic has one reader per worker, the follower; the records it
refuses are dead-lettered once per deployment, by the worker holding
partition 0, from the position that duty committed (app/worker/catalog_dead_letters.py).
Real workers on Apache Kafka."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.devstack.stack import DevStack
from app.worker.catalog_dead_letters import duty_group
from infra.topic_names import TopicNames
from schemas.dead_letter import DeadLetter
from schemas.events import AttemptGraded, LearningInstanceCreated, encode_event
from tests import waiting
from tests.integration.helpers import produce
from tests.reliability.crashes import committed_offsets, kill
from tests.reliability.test_scale_and_commit import _assignments

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


def _created(li: str, partner: str) -> LearningInstanceCreated:
    return LearningInstanceCreated(
        event_id=f"ev-{li}-{partner}",
        occurred_at=NOW,
        learning_instance_id=li,
        partner_id=partner,
    )


def _refused(tag: str) -> list[bytes]:
    """Three records the catalog refuses, one of each kind: bytes that are no
    event, an event that does not belong on the topic, and a learning
    instance another partner created first (``li-owned`` by ``pa``)."""
    wrong_topic = AttemptGraded(
        event_id=f"ev-attempt-{tag}",
        occurred_at=NOW,
        attempt_id=f"att-{tag}",
        registration_id="reg-1",
        module_id="mod-1",
        is_correct=True,
        interaction_end_time=NOW,
    )
    return [
        f"not json {tag}".encode(),
        encode_event(wrong_topic),
        encode_event(_created("li-owned", f"pb-{tag}")),
    ]


def _produce_catalog(stack: DevStack, values: list[bytes]) -> None:
    topic = TopicNames(stack.settings.topic_prefix).catalog

    async def go() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=stack.kafka.bootstrap_servers, acks="all"
        )
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value, key=b"catalog")
        finally:
            await producer.stop()

    asyncio.run(go())


def _dead_letters(stack: DevStack) -> list[tuple[int, str]]:
    """Every dead letter of a catalog record on the topic, duplicates
    included (``mastery dlq`` shows each source record once)."""
    topics = TopicNames(stack.settings.topic_prefix)

    async def go() -> list[tuple[int, str]]:
        consumer = AIOKafkaConsumer(
            topics.dead_letter,
            bootstrap_servers=stack.kafka.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            found: list[tuple[int, str]] = []
            while batches := await consumer.getmany(timeout_ms=1000):
                for records in batches.values():
                    for record in records:
                        letter = DeadLetter.model_validate_json(record.value or b"")
                        if letter.source_topic == topics.catalog:
                            found.append((letter.offset, letter.reason))
            return sorted(found)
        finally:
            await consumer.stop()

    return asyncio.run(go())


def _wait_for_dead_letters(stack: DevStack, count: int) -> list[tuple[int, str]]:
    found = waiting.wait_for(
        lambda: _dead_letters(stack),
        accept=lambda found: len(found) >= count,
        timeout_s=60,
        interval_s=0.5,
        what=f"{count} dead letters of catalog records",
    )
    # None comes twice: no other worker sends them again. Three passes of
    # the duty (one a second) and the other worker's as many.
    waiting.holds_for(
        lambda: _dead_letters(stack) == found,
        window_s=3,
        interval_s=0.5,
        what=f"exactly these dead letters: {found}",
    )
    return found


def _catalog_end(stack: DevStack) -> int:
    topic = TopicNames(stack.settings.topic_prefix).catalog

    async def go() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka.bootstrap_servers)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            return (await consumer.end_offsets([tp]))[tp]
        finally:
            await consumer.stop()

    return asyncio.run(go())


def _committed(stack: DevStack, group: str) -> int | None:
    topic = TopicNames(stack.settings.topic_prefix).catalog
    return asyncio.run(
        committed_offsets(stack.kafka.bootstrap_servers, group, topic, 1)
    )[0]


def _sharing(stack: DevStack, a: str, b: str) -> bool:
    last_a, last_b = (
        (_assignments(stack, a) or [set()])[-1],
        (_assignments(stack, b) or [set()])[-1],
    )
    return bool(last_a and last_b and not last_a & last_b)


def test_two_workers_dead_letter_each_refused_catalog_record_once(
    stack: DevStack,
) -> None:
    produce(stack, [_created("li-owned", "pa")])
    a = stack.start_worker("worker-a")
    stack.start_worker("worker-b")
    waiting.wait_for(
        lambda: _sharing(stack, "worker-a", "worker-b"),
        timeout_s=90,
        interval_s=0.5,
        what="both workers to hold partitions",
    )
    _produce_catalog(stack, _refused("1"))
    found = _wait_for_dead_letters(stack, 3)
    assert [offset for offset, _ in found] == [1, 2, 3]
    reasons = [reason for _, reason in found]
    assert reasons[0].startswith("invalid event"), reasons
    assert "does not belong on this topic" in reasons[1], reasons
    assert "already belongs to another partner" in reasons[2], reasons

    # The duty's position is committed under its own group; the workers'
    # group never reads the catalog topic.
    end = _catalog_end(stack)
    waiting.wait_for(
        lambda: _committed(stack, duty_group(stack.settings.worker_id)),
        accept=lambda committed: committed == end,
        timeout_s=30,
        interval_s=0.5,
        what="the dead-letter duty to commit the catalog's end",
    )
    assert _committed(stack, stack.settings.worker_id) is None

    # Whoever holds partition 0 is killed: the other takes the duty over and
    # sends only what was refused after the committed position.
    holder = "worker-a" if 0 in _assignments(stack, "worker-a")[-1] else "worker-b"
    victim = a if holder == "worker-a" else stack.workers[1]
    kill(victim)
    survivor = "worker-b" if holder == "worker-a" else "worker-a"
    partitions = set(range(stack.settings.topic_partitions))
    waiting.wait_for(
        lambda: (_assignments(stack, survivor) or [set()])[-1] == partitions,
        timeout_s=90,
        interval_s=0.5,
        what=f"{survivor} to hold every partition",
    )
    _produce_catalog(stack, _refused("2"))
    found = _wait_for_dead_letters(stack, 6)
    assert [offset for offset, _ in found] == [1, 2, 3, 4, 5, 6]


def test_the_duty_starts_where_the_catalog_agent_of_an_older_release_stopped(
    stack: DevStack,
) -> None:
    """An upgrade: the workers' group committed the catalog topic (the catalog
    agent of earlier releases), the duty's group never did. Records before
    that offset were dead-lettered then; only later ones are now."""
    produce(stack, [_created("li-owned", "pa")])
    _produce_catalog(stack, _refused("old"))
    topic = TopicNames(stack.settings.topic_prefix).catalog

    async def commit_as_the_old_agent() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.kafka.bootstrap_servers,
            group_id=stack.settings.worker_id,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.commit({tp: 4})
        finally:
            await consumer.stop()

    asyncio.run(commit_as_the_old_agent())
    _produce_catalog(stack, _refused("new"))
    stack.start_worker("worker-1")
    found = _wait_for_dead_letters(stack, 3)
    assert [offset for offset, _ in found] == [4, 5, 6]
