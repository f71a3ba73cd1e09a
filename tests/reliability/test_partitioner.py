"""Attempts a producer put on another partition than their key's (librdkafka's
CRC32 default, or an explicit partition) are forwarded and applied (issue 10.9)."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiokafka import AIOKafkaProducer

from app.devstack.stack import DevStack
from app.devstack.workload import simulated
from infra.topic_names import TopicNames
from processors.partitioning import kafka_partition
from schemas.events import encode_event
from tests.integration.helpers import produce, wait_until_rows_match

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_misplaced_attempts_are_forwarded_and_applied(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=12, attempts_per_learner=25, seed=6
    )
    produce(stack, [*workload.catalog, *workload.registrations])
    topic = TopicNames(stack.settings.topic_prefix).registration_events
    n = stack.settings.topic_partitions

    async def misplace() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap_servers)
        await producer.start()
        try:
            futures = []
            for attempt in workload.attempts:
                key = attempt.registration_id.encode()
                wrong = (kafka_partition(key, n) + 1) % n
                futures.append(
                    await producer.send(
                        topic, encode_event(attempt), key=key, partition=wrong
                    )
                )
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(misplace())
    stack.start_worker()
    wait_until_rows_match(
        stack, workload, [*workload.registrations, *workload.attempts], per_page=100
    )
    log = (stack.log_dir / "worker-1.log").read_text()
    # app/worker/outbox.py logs each dead letter as "dead-letter topic/p/o: why".
    assert "forwarded" in log and not re.search(r"dead-letter \S+/\d+/\d+: ", log)
