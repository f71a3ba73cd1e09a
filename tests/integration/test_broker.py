"""The embedded broker's known bugs: the self-check, and how batches are produced."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from app.embedded import EmbeddedKafka
from infra.broker import (
    KAFKA,
    TANSU,
    BrokerProfile,
    create_topics,
    self_check,
    verify_profile,
)
from infra.producer import EventProducer
from infra.settings import Settings
from infra.topics import TopicNames

pytestmark = pytest.mark.integration


def test_self_check_reports_tansus_end_offset_bug(kafka_server: EmbeddedKafka) -> None:
    check = asyncio.run(self_check(kafka_server.bootstrap_servers, TopicNames("bc")))
    # Three records in one batch: the true end is base + 3, Tansu says base + 1.
    assert not check.reports_offsets_correctly
    assert check.reported_end == check.expected_end - 2
    assert "WRONG" in check.describe()


def test_tansu_profile_is_accepted_for_the_embedded_broker(
    kafka_server: EmbeddedKafka,
) -> None:
    settings = Settings(broker_profile="kafka", topic_prefix="bc2")
    check = asyncio.run(verify_profile(settings, TANSU, kafka_server.bootstrap_servers))
    assert not check.reports_offsets_correctly


async def _batch_sizes(bootstrap: str, topic: str) -> list[int]:
    """Records in each batch of partition 0 of ``topic``, read with raw fetches
    (a consumer hides how records were batched)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        node = next(iter(client.cluster.brokers())).nodeId
        sizes: list[int] = []
        offset = 0
        while True:
            request = FetchRequest(
                10, 1, 64 * 2**20, 0, [(topic, [(0, offset, 64 * 2**20)])]
            )
            response = await client.send(node, request)
            # As aiokafka's Fetcher reads it: the partition's records come last.
            records = MemoryRecords(response.topics[0][1][0][-1])
            before = offset
            while (batch := records.next_batch()) is not None:
                offsets = [record.offset for record in batch]
                sizes.append(len(offsets))
                offset = offsets[-1] + 1
            if offset == before:
                return sizes
    finally:
        await client.close()


@pytest.mark.parametrize("profile", [TANSU, KAFKA], ids=lambda p: p.name)
def test_tansu_profile_producers_leave_few_large_batches(
    kafka_server: EmbeddedKafka, profile: BrokerProfile
) -> None:
    # Bug 5: every batch is an object Tansu lists on each fetch. A bulk send
    # under the Tansu profile fills batches far past aiokafka's 16 KiB default;
    # the Kafka profile (the default batch size) shows the test can tell.
    bootstrap = kafka_server.bootstrap_servers
    topic = f"bb5-{profile.name}"
    value = b"x" * 300
    count = 3000

    async def run() -> list[int]:
        await create_topics(bootstrap, [NewTopic(topic, 1, 1)])
        async with EventProducer(bootstrap, profile, TopicNames("bb5")) as producer:
            acks = [await producer.send_raw(topic, b"k", value) for _ in range(count)]
            await asyncio.gather(*acks)
        return await _batch_sizes(bootstrap, topic)

    sizes = asyncio.run(run())
    assert sum(sizes) == count
    per_default_batch = 16384 // len(value)  # at most, in aiokafka's 16 KiB
    if profile is TANSU:
        assert max(sizes) > 4 * per_default_batch
        assert len(sizes) <= count // (4 * per_default_batch) + 1
    else:
        assert max(sizes) <= per_default_batch
