"""The commit hook (``_Consumer._commit_tps``, app/faust_corrections/transport.py)
on the real broker: an offset is committed only after the checkpoint wrote
the states of the records it covers to the changelog.

Without it (``pytest --without commit-hook``: Faust's ``_commit_tps``) Faust
commits the offsets of records whose states exist only in the worker's
memory; a worker killed then and restarted without its local store finds
the registrations gone, and this test fails.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from app.devstack import DevStack
from app.workload import simulated
from infra.topics import TopicNames
from tests.integration.helpers import produce, wait_until_rows_match
from tests.reliability.crashes import committed_offsets, kill

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _ends(stack: DevStack, topic: str) -> list[int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    probe = AIOKafkaConsumer(bootstrap_servers=stack.kafka.bootstrap_servers)
    await probe.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(stack.settings.topic_partitions)]
        ends = await probe.end_offsets(tps)
        return [ends[tp] for tp in tps]
    finally:
        await probe.stop()


def test_committed_offsets_survive_a_restart_from_the_changelog(
    stack: DevStack,
) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=30, attempts_per_learner=20, seed=31
    )
    half = len(workload.attempts) // 2
    produce(stack, [*workload.catalog, *workload.registrations])
    produce(stack, workload.attempts[:half])
    worker = stack.start_worker("worker-1")
    wait_until_rows_match(
        stack, workload, [*workload.registrations, *workload.attempts[:half]]
    )
    topic = TopicNames(stack.settings.topic_prefix).registration_events
    ends = asyncio.run(_ends(stack, topic))
    deadline = time.monotonic() + 30
    while True:  # every record read so far is committed (every 1 s)
        committed = asyncio.run(
            committed_offsets(
                stack.kafka.bootstrap_servers,
                stack.settings.worker_id,
                topic,
                stack.settings.topic_partitions,
            )
        )
        if [c or 0 for c in committed] == ends:
            break
        assert time.monotonic() < deadline, (committed, ends)
        time.sleep(0.5)
    kill(worker)
    # Its local store gone, the restarted worker has the changelog alone, and
    # reads only what was not committed.
    stack.start_worker("worker-1", wipe_data=True)
    produce(stack, workload.attempts[half:])
    wait_until_rows_match(
        stack,
        workload,
        [*workload.registrations, *workload.attempts],
        timeout_s=90,
    )
