"""Acks after the checkpoint (app/worker/checkpoint.py) on the real broker: an offset
is committed only after the checkpoint wrote the states of the records it
covers to the changelog.

Without it (``pytest --without ack-after-checkpoint``: events acked as soon as
their batch is handled, as Faust's ``take_events`` does) Faust commits the
offsets of records whose states exist only in the worker's memory; a worker
killed then and restarted without its local store finds the registrations
gone, and this test fails.
"""

from __future__ import annotations

import asyncio

import pytest

from app.devstack.stack import DevStack
from app.devstack.workload import simulated
from infra.topic_names import TopicNames
from tests import waiting
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


def _committed(stack: DevStack, topic: str) -> list[int]:
    """The worker group's committed offset of each partition (0: none)."""
    offsets = asyncio.run(
        committed_offsets(
            stack.kafka.bootstrap_servers,
            stack.settings.worker_id,
            topic,
            stack.settings.topic_partitions,
        )
    )
    return [c or 0 for c in offsets]


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
    waiting.wait_for(  # every record read so far is committed (every 1 s)
        lambda: _committed(stack, topic),
        accept=lambda committed: committed == ends,
        timeout_s=30,
        interval_s=0.5,
        what=f"committed offsets at the ends {ends}",
    )
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


def test_no_offset_is_committed_before_a_checkpoint_stored_its_states(
    stack: DevStack,
) -> None:
    """With checkpoints an hour apart and commits every 0.2 s, the worker
    applies every record but commits none (Faust commits only what a
    checkpoint acked); a kill then loses nothing. Acking at once (``--without
    ack-after-checkpoint``) commits offsets whose states are only in memory."""
    workload = simulated(
        learning_instances=1, learners_per_instance=20, attempts_per_learner=10, seed=37
    )
    produce(stack, [*workload.catalog, *workload.registrations, *workload.attempts])
    worker = stack.start_worker(
        "worker-1",
        extra_env={
            "MASTERY_COMMIT_INTERVAL_S": "0.2",
            "MASTERY_CHECKPOINT_INTERVAL_S": "3600",
        },
    )
    wait_until_rows_match(
        stack, workload, [*workload.registrations, *workload.attempts]
    )
    topic = TopicNames(stack.settings.topic_prefix).registration_events

    # Every record is applied (its row is in Redis): ten commit intervals
    # later, an ack at once would have been committed.
    nothing = [0] * stack.settings.topic_partitions
    waiting.holds_for(
        lambda: _committed(stack, topic) == nothing,
        window_s=2.0,
        interval_s=0.2,
        what=f"committed offsets {nothing} (nothing committed before a checkpoint)",
    )
    kill(worker)
    stack.start_worker("worker-1", wipe_data=True)
    wait_until_rows_match(
        stack, workload, [*workload.registrations, *workload.attempts], timeout_s=90
    )


def test_a_rebalance_checkpoints_at_once_and_commits_what_it_stored(
    stack: DevStack,
) -> None:
    """Checkpoints an hour apart: when a second worker joins, Faust stops the
    first one's flow and waits for its unacked events; the worker checkpoints
    at once (``_Consumer.stop_flow``), so the rebalance completes and commits
    every record applied. Without it (``--without flow-stop-checkpoint``) the
    rebalance waits for acks that only the hourly checkpoint would give."""
    workload = simulated(
        learning_instances=1, learners_per_instance=20, attempts_per_learner=10, seed=41
    )
    produce(stack, [*workload.catalog, *workload.registrations, *workload.attempts])
    env = {"MASTERY_COMMIT_INTERVAL_S": "0.2", "MASTERY_CHECKPOINT_INTERVAL_S": "3600"}
    stack.start_worker("worker-1", extra_env=env)
    everything = [*workload.registrations, *workload.attempts]
    wait_until_rows_match(stack, workload, everything)
    topic = TopicNames(stack.settings.topic_prefix).registration_events
    ends = asyncio.run(_ends(stack, topic))

    assert _committed(stack, topic) == [0] * stack.settings.topic_partitions  # none yet
    stack.start_worker("worker-2", extra_env=env)  # a rebalance
    waiting.wait_for(
        lambda: _committed(stack, topic),
        accept=lambda now: now == ends,
        timeout_s=60,
        what="the records applied before the rebalance to be committed by it",
    )
