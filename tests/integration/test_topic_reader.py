"""infra.topic_reader on Apache Kafka: a fresh consumer knows no topic's
partitions, and the reader must still read the whole topic."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from app.devstack.embedded_kafka import EmbeddedKafka
from infra.broker import KAFKA
from infra.topic_reader import read_topic

pytestmark = pytest.mark.integration


async def test_a_whole_topic_is_read_and_a_missing_one_is_empty(
    kafka_server: EmbeddedKafka,
) -> None:
    bootstrap = kafka_server.bootstrap_servers
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait("reader-t1", b"v%d" % i, key=b"k%d" % i)
    finally:
        await producer.stop()
    values = [r.value async for r in read_topic(bootstrap, "reader-t1", KAFKA)]
    assert values == [b"v%d" % i for i in range(5)]
    assert [r async for r in read_topic(bootstrap, "reader-missing", KAFKA)] == []
