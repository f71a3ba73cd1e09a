"""End to end: real broker, Redis, worker and API processes; a real Kafka client
produces events; the HTTP API must serve exactly what the pure model computes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from app.broker import profile_for
from app.devstack import DevStack, post_json
from app.producer import EventProducer
from app.settings import Settings
from app.topics import TopicNames
from app.workload import Workload, simulated
from tests.oracle import expected_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE = 10


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    settings = Settings(api_port=0, topic_partitions=4, topic_prefix="e2e")
    logs = tmp_path_factory.mktemp("logs")
    with DevStack(settings, log_dir=logs) as s:
        s.start()
        yield s
        for log in sorted(logs.iterdir()):  # shown by pytest only when a test fails
            print(f"==== {log.name}\n{log.read_text()[-4000:]}")


def _produce(stack: DevStack, workload: Workload) -> None:
    async def go() -> None:
        bootstrap = stack.kafka.bootstrap_servers
        profile = profile_for(Settings(broker_profile="tansu"))
        async with EventProducer(bootstrap, profile, TopicNames("e2e")) as producer:
            await producer.send_all(workload.catalog)
            await producer.send_all(workload.registrations)
            await producer.send_all(workload.attempts)

    asyncio.run(go())


def _all_pages(
    stack: DevStack, li: str, goals: list[str]
) -> tuple[int, list[dict[str, Any]]] | str:
    rows: list[dict[str, Any]] = []
    body: dict[str, Any] = {"goal_ids": goals, "registrations_per_page": PAGE}
    pages = 0
    while True:
        status, page = post_json(
            f"{stack.api_url}/learning-instances/{li}/metrics/status-and-progress", body
        )
        if status != 200:  # e.g. 404 until the worker has projected the LI
            return f"{li}: HTTP {status} {page}"
        assert isinstance(page, dict)
        assert page["column_headers"] == goals
        assert page["query"] == body
        pages += 1
        rows += page["data"]
        if "next" not in page:
            return pages, rows
        assert page["next"]["registrations_per_page"] == PAGE
        body = {**body, "registration_offset": page["next"]["registration_offset"]}


def test_rows_served_equal_the_oracle(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=2, learners_per_instance=25, attempts_per_learner=30
    )
    _produce(stack, workload)
    oracle = expected_rows(
        workload.catalog, [*workload.registrations, *workload.attempts]
    )
    learners = {
        li: [
            r.registration_id
            for r in workload.registrations
            if r.learning_instance_id == li and r.role == "learner"
        ]
        for li in workload.learning_instances
    }

    def mismatches() -> list[str]:
        problems = []
        for li in workload.learning_instances:
            goals = workload.goals_of(li)
            result = _all_pages(stack, li, goals)
            if isinstance(result, str):
                problems.append(result)
                continue
            pages, rows = result
            assert pages >= 3
            got_ids = [row["registration_id"] for row in rows]
            if got_ids != learners[li]:
                problems.append(f"{li}: registrations {got_ids} != {learners[li]}")
                continue
            for row in rows:
                expected = [oracle[row["registration_id"]][g] for g in goals]
                if row["status_and_progress"] != expected:
                    problems.append(
                        f"{row['registration_id']}: {row['status_and_progress']} "
                        f"!= {expected}"
                    )
        return problems

    deadline = time.monotonic() + 150
    problems = mismatches()
    while problems and time.monotonic() < deadline:
        time.sleep(1.0)
        problems = mismatches()
    assert problems == [], problems[:3]
    # The oracle is not trivial: the workload moved learners through statuses.
    statuses = {item["status"] for regs in oracle.values() for item in regs.values()}
    assert {"in_progress", "complete"} <= statuses, statuses

    # One registration through the other endpoint, both goals.
    li = workload.learning_instances[1]
    reg = learners[li][3]
    status, page = post_json(
        f"{stack.api_url}/registrations/{reg}/metrics/status-and-progress",
        {"goal_ids": workload.goals_of(li)},
    )
    assert status == 200
    assert isinstance(page, dict)
    assert page["data"] == [
        {
            "registration_id": reg,
            "status_and_progress": [oracle[reg][g] for g in workload.goals_of(li)],
        }
    ]
    assert orjson.dumps(page)  # served JSON decodes and re-encodes cleanly
