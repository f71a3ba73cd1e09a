"""End to end: real broker, Redis, worker and API processes; a real Kafka client
produces events; the HTTP API must serve exactly what the pure model computes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.devstack.embedded_kafka import EmbeddedKafka
from app.devstack.stack import DevStack, post_json
from app.devstack.workload import simulated
from infra.broker import profile_for
from infra.settings import Settings
from infra.topic_names import TopicNames
from infra.topic_reader import read_topic
from processors.catalog import Catalog
from processors.partitioning import kafka_partition
from schemas.status_and_progress import StatusAndProgressPage
from schemas.transitions import StatusChanged
from tests.integration.helpers import (
    partner_of,
    produce,
    produce_catalog_first,
    started_stack,
    wait_until_rows_match,
)
from tests.oracle import Transition, expected_transitions
from tests.waiting import wait_for

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
    # The body as served (rows through Redis, framed by the store) is the
    # contract's (schemas/status_and_progress.py).
    StatusAndProgressPage.model_validate(page, strict=True)
    assert page["data"] == [
        {"registration_id": reg, "status_and_progress": [oracle[reg][g] for g in goals]}
    ]


def test_rows_served_equal_the_oracle_on_a_redis_cluster(
    tmp_path: Path, kafka_server: EmbeddedKafka
) -> None:
    """Worker -> a three-master Redis Cluster -> API pages and a registration
    page: the read model's writes (one MULTI/EXEC per learning instance), its
    scripts and the page's MULTI/EXEC all hold on a cluster, which refuses a
    key of another slot."""
    workload = simulated(
        learning_instances=3, learners_per_instance=8, attempts_per_learner=10
    )
    with started_stack(kafka_server, tmp_path, "e2ec", 2, redis_cluster=True) as s:
        assert s.redis_cluster is not None and s.redis.proc is None
        produce(s, [*workload.catalog, *workload.registrations, *workload.attempts])
        oracle = wait_until_rows_match(
            s, workload, [*workload.registrations, *workload.attempts], min_pages=1
        )
        li = workload.learning_instances[0]
        learner = next(
            r
            for r in workload.registrations
            if r.learning_instance_id == li and r.role == "learner"
        )
        status, body = post_json(
            f"{s.api_url}/registrations/{learner.registration_id}"
            "/metrics/status-and-progress",
            {"goal_ids": workload.goals_of(li)},
            token=s.token(partner_id=partner_of(workload, li)),
        )
        assert status == 200, body
        assert isinstance(body, dict)
        reg = learner.registration_id
        assert body["data"] == [
            {
                "registration_id": reg,
                "status_and_progress": [oracle[reg][g] for g in workload.goals_of(li)],
            }
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


def _status_changes(stack: DevStack) -> list[tuple[int, StatusChanged]]:
    """Every record of the status-changes topic: (partition, change)."""

    async def go() -> list[tuple[int, StatusChanged]]:
        profile = profile_for(Settings(broker_profile="kafka"))
        topic = TopicNames(stack.settings.topic_prefix).status_changes
        return [
            (r.partition, StatusChanged.from_bytes(r.value or b""))
            async for r in read_topic(stack.kafka.bootstrap_servers, topic, profile)
        ]

    return asyncio.run(go())


def _per_registration(changes: list[Transition]) -> dict[str, list[Transition]]:
    out: dict[str, list[Transition]] = {}
    for change in changes:
        out.setdefault(change[0], []).append(change)
    return out


def test_status_changes_are_the_oracles_in_order_per_registration(
    stack: DevStack,
) -> None:
    """The worker's status-changes topic holds exactly the transitions of the
    oracle (full rows after every event), each registration's in its events'
    order, on the partition of its key."""
    workload = simulated(
        learning_instances=2, learners_per_instance=15, attempts_per_learner=30, seed=5
    )
    # The catalog first, and known to the worker (its pages answer), so the
    # registrations are folded against the catalog the oracle uses.
    produce_catalog_first(stack, workload)
    events = [*workload.registrations, *workload.attempts]
    produce(stack, events)
    wait_until_rows_match(stack, workload, events)
    catalog = Catalog()
    for event in workload.catalog:
        catalog.apply(event)
    expected = _per_registration(expected_transitions(catalog, events))
    kinds = {(e[2], e[3]) for changes in expected.values() for e in changes}
    assert {(None, "no_work"), ("no_work", "in_progress")} <= kinds, kinds
    assert any(status == "complete" for _, status in kinds), kinds

    def transitions(
        records: list[tuple[int, StatusChanged]],
    ) -> dict[str, list[Transition]]:
        return _per_registration(
            [
                (
                    c.registration_id,
                    c.goal_id,
                    c.previous_status,
                    c.status,
                    c.event_id,
                )
                for _, c in records
            ]
        )

    records = wait_for(
        lambda: _status_changes(stack),
        accept=lambda records: transitions(records) == expected,
        timeout_s=60,
        interval_s=0.5,
        what="the status changes the oracle expects, per registration",
    )
    partitions = stack.settings.topic_partitions
    for partition, change in records:
        assert partition == kafka_partition(change.registration_id.encode(), partitions)
        assert change.partner_id == partner_of(workload, change.learning_instance_id)
