"""End to end: real broker, Redis, worker and API processes; a real Kafka client
produces events; the HTTP API must serve exactly what the pure model computes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.devstack import DevStack, post_json
from app.embedded_kafka import EmbeddedKafka
from app.workload import simulated
from tests.integration.helpers import (
    partner_of,
    produce,
    started_stack,
    wait_until_rows_match,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def stack(tmp_path: Path, kafka_server: EmbeddedKafka) -> Iterator[DevStack]:
    with started_stack(kafka_server, tmp_path, "e2e", 4) as s:
        yield s


def test_rows_served_equal_the_oracle(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=2, learners_per_instance=25, attempts_per_learner=30
    )
    produce(stack, [*workload.catalog, *workload.registrations, *workload.attempts])
    oracle = wait_until_rows_match(
        stack, workload, [*workload.registrations, *workload.attempts], min_pages=3
    )
    # The oracle is not trivial: the workload moved learners through statuses.
    statuses = {item["status"] for regs in oracle.values() for item in regs.values()}
    assert {"in_progress", "complete"} <= statuses, statuses

    # One registration through the other endpoint, both goals.
    li = workload.learning_instances[1]
    goals = workload.goals_of(li)
    learner = next(
        r
        for r in workload.registrations
        if r.learning_instance_id == li and r.role == "learner"
    )
    reg = learner.registration_id
    # Asked by the learner themself: no role, only the registration's user id.
    own_token = stack.token(
        sub=learner.user_id, partner_id=partner_of(workload, li), roles=()
    )
    status, page = post_json(
        f"{stack.api_url}/registrations/{reg}/metrics/status-and-progress",
        {"goal_ids": goals},
        token=own_token,
    )
    assert status == 200
    assert isinstance(page, dict)
    assert page["data"] == [
        {"registration_id": reg, "status_and_progress": [oracle[reg][g] for g in goals]}
    ]


def test_worker_restart_recovers_state_from_the_changelog(stack: DevStack) -> None:
    """Half the attempts, then a new worker with its RocksDB folder deleted,
    then the rest: every row must still equal the oracle of all events. On a
    broker that misreported end offsets (Tansu 0.6), recovery stopped short
    here."""
    workload = simulated(
        learning_instances=1, learners_per_instance=20, attempts_per_learner=30, seed=3
    )
    half = len(workload.attempts) // 2
    first = [*workload.registrations, *workload.attempts[:half]]
    produce(stack, [*workload.catalog, *first])
    wait_until_rows_match(stack, workload, first)

    old = stack.workers[0]
    stack.stop_worker(old)
    stack.start_worker("worker-1", wipe_data=True)
    produce(stack, workload.attempts[half:])
    wait_until_rows_match(stack, workload, [*first, *workload.attempts[half:]])
