"""The broker self-check and end offsets, on the embedded Apache Kafka."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.devstack.embedded_kafka import EmbeddedKafka
from infra.broker import end_offsets, self_check, verify_broker
from infra.settings import Settings
from infra.topic_names import TopicNames

pytestmark = pytest.mark.integration

_n = itertools.count()


def test_self_check_reports_correct_end_offsets_on_apache_kafka(
    kafka_server: EmbeddedKafka,
) -> None:
    check = asyncio.run(self_check(kafka_server.bootstrap_servers, TopicNames("bc")))
    # Three records in one batch: the true end is base + 3.
    assert check.reports_offsets_correctly
    assert check.reported_end == check.expected_end
    assert "correct" in check.describe()


def test_verify_broker_accepts_apache_kafka(kafka_server: EmbeddedKafka) -> None:
    settings = Settings(topic_prefix="bc2")
    check = asyncio.run(verify_broker(settings, kafka_server.bootstrap_servers))
    assert check.reports_offsets_correctly


async def test_end_offsets_are_the_brokers_or_a_timeout(
    kafka_server: EmbeddedKafka,
) -> None:
    # Ten records in one batch end at 10; a broker that does not answer in
    # time is "cannot tell" (TimeoutError), never a made-up end.
    bootstrap = kafka_server.bootstrap_servers
    topic = f"eo{next(_n)}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=100)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, b"v%d" % i, partition=0) for i in range(10)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        assert await end_offsets(consumer, [tp]) == {tp: 10}
        with pytest.raises(TimeoutError):
            await end_offsets(consumer, [tp], timeout_s=0.0)
    finally:
        await consumer.stop()


def test_workers_starting_together_all_pass_the_self_check(
    kafka_server: EmbeddedKafka,
) -> None:
    # Each check's batch can land between another's send and its question:
    # the end is then larger than that check's own, never smaller.
    async def together() -> list[bool]:
        checks = await asyncio.gather(
            *(
                self_check(kafka_server.bootstrap_servers, TopicNames("bc4"))
                for _ in range(4)
            )
        )
        return [c.reports_offsets_correctly for c in checks]

    assert asyncio.run(together()) == [True] * 4
