"""Two workers share a replay exactly; a kill between a batch's Redis write and
the next commit (write-back states not yet in the changelog) loses and doubles
nothing."""

from __future__ import annotations

import asyncio
import re

import pytest

from app.devstack.stack import DevStack
from app.devstack.workload import simulated
from infra.topic_names import TopicNames
from tests.integration.helpers import produce, wait_until_rows_match
from tests.reliability.crashes import committed_offsets, kill
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _assignments(stack: DevStack, name: str) -> list[set[int]]:
    text = (stack.log_dir / f"{name}.log").read_text()
    return [
        {int(p) for p in re.findall(r"\d+", found)}
        for found in re.findall(r"assigned partitions \[([\d, ]*)\]", text)
    ]


def test_two_workers_finish_a_replay_exactly(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=2, learners_per_instance=60, attempts_per_learner=100, seed=4
    )
    produce(stack, [*workload.catalog, *workload.registrations, *workload.attempts])
    a = stack.start_worker("worker-a")
    b = stack.start_worker("worker-b")
    wait_until_rows_match(
        stack,
        workload,
        [*workload.registrations, *workload.attempts],
        per_page=100,
        timeout_s=180,
    )
    assert a.poll() is None and b.poll() is None  # neither died nor restarted
    assert len(stack.workers) == 2

    # On Kafka the first worker can finish the whole replay before the
    # second has joined: wait for the group to settle on sharing.
    def latest(seen: list[set[int]]) -> set[int]:
        return (seen or [set()])[-1]

    def shared(seen: tuple[list[set[int]], list[set[int]]]) -> bool:
        last_a, last_b = map(latest, seen)
        return bool(last_a and last_b and not last_a & last_b)

    seen_a, seen_b = wait_for(
        lambda: (_assignments(stack, "worker-a"), _assignments(stack, "worker-b")),
        accept=shared,
        timeout_s=60,
        interval_s=0.5,
        what="worker-a and worker-b each assigned partitions, none to both",
    )
    last_a, last_b = latest(seen_a), latest(seen_b)
    # The group shares the partitions: both work, none twice, none left out.
    assert last_a | last_b == set(range(stack.settings.topic_partitions))


def _committed(stack: DevStack) -> list[int | None]:
    return asyncio.run(
        committed_offsets(
            stack.kafka.bootstrap_servers,
            stack.settings.worker_id,
            TopicNames(stack.settings.topic_prefix).registration_events,
            stack.settings.topic_partitions,
        )
    )


def test_kill_between_redis_write_and_commit(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=2, learners_per_instance=30, attempts_per_learner=60, seed=12
    )
    half = len(workload.attempts) // 2
    produce(stack, [*workload.catalog, *workload.registrations])
    produce(stack, workload.attempts[:half])
    # Commits (and so checkpoints) only every 60 s: the rows below reach Redis
    # from batches whose states exist only in the worker's memory.
    slow = stack.start_worker("worker-1", extra_env={"MASTERY_COMMIT_INTERVAL_S": "60"})
    wait_until_rows_match(
        stack,
        workload,
        [*workload.registrations, *workload.attempts[:half]],
        per_page=100,
    )
    committed = _committed(stack)
    assert all(offset is None for offset in committed), committed
    kill(slow)  # rows written, nothing checkpointed or committed
    stack.start_worker("worker-1")
    produce(stack, workload.attempts[half:])
    wait_until_rows_match(
        stack,
        workload,
        [*workload.registrations, *workload.attempts],
        per_page=100,
        timeout_s=180,
    )
    # ... and the restarted worker checkpoints and commits as usual.
    wait_for(
        lambda: _committed(stack),
        accept=all,
        timeout_s=15,
        interval_s=0.5,
        what="an offset committed on every partition",
    )
