"""Bounded definitions and pages (docs/ingest.md, "Limits"), through the real
app over the real Redis and broker: a definition over a limit is a 400 naming
the field and the limit, the largest allowed one is accepted, and a page whose
rows exceed MAX_PAGE_BYTES is a 400 naming what to ask for instead."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis
from infra.read_model import Projection, ReadModelKeys, RedisProjector
from schemas.events import (
    GoalDefined,
    LearningInstanceCreated,
    RegistrationCreated,
    Target,
)
from schemas.limits import (
    MAX_MEMBERS_PER_TOPIC,
    MAX_OBJECTIVES_PER_MODULE,
    MAX_PAGE_BYTES,
    MAX_ROW_BYTES,
    MAX_TARGETS_PER_GOAL,
    MAX_TOPICS_PER_GOAL,
)
from tests.integration.auth_world import api_client, bearer, seed_world

pytestmark = pytest.mark.integration

ADMIN = bearer("adm1", "p1", ("partner_admin",))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def client(
    redis_server: EmbeddedRedis, kafka_server: EmbeddedKafka
) -> Iterator[TestClient]:
    seed_world(redis_server.url)
    asyncio.run(_seed_heavy_class(redis_server.url))
    with api_client(redis_server.url, kafka_server.bootstrap_servers, "limits") as c:
        c.headers.update(ADMIN)
        yield c


def _refused(client: TestClient, path: str, body: object) -> dict[str, object]:
    r = client.put(path, content=orjson.dumps(body), headers=_JSON)
    assert r.status_code == 400, r.text[:500]
    details = r.json()["error"]["details"]
    assert isinstance(details, list) and len(details) == 1, details
    entry: dict[str, object] = details[0]
    return entry


_JSON = {"content-type": "application/json"}


def test_a_goal_with_60000_topics_is_a_400_naming_topics_and_the_limit(
    client: TestClient,
) -> None:
    body = {
        "learning_instance_id": "li-a",
        "targets": [{"learning_objective_id": "lo-1"}],
        "topics": {f"topic-{i}": ["lo-1"] for i in range(60_000)},
    }
    assert len(orjson.dumps(body)) < 2 * 1024 * 1024  # within the body limit
    entry = _refused(client, "/goals/goal-huge", body)
    assert entry["field"] == "topics"
    assert entry["limit"] == MAX_TOPICS_PER_GOAL


def test_every_collection_of_a_definition_is_bounded(client: TestClient) -> None:
    members = _refused(
        client,
        "/goals/goal-members",
        {
            "learning_instance_id": "li-a",
            "targets": [{"learning_objective_id": "lo-1"}],
            "topics": {"t": ["lo-1"] * (MAX_MEMBERS_PER_TOPIC + 1)},
        },
    )
    assert (members["field"], members["limit"]) == ("topics.t", MAX_MEMBERS_PER_TOPIC)
    targets = _refused(
        client,
        "/goals/goal-targets",
        {
            "learning_instance_id": "li-a",
            "targets": [
                {"learning_objective_id": f"lo-{i}"}
                for i in range(MAX_TARGETS_PER_GOAL + 1)
            ],
        },
    )
    assert (targets["field"], targets["limit"]) == ("targets", MAX_TARGETS_PER_GOAL)
    long_ids = _refused(
        client,
        "/goals/goal-long-ids",
        {
            "learning_instance_id": "li-a",
            "targets": [
                {"learning_objective_id": f"lo-{i:03d}-" + "x" * 500}
                for i in range(MAX_TARGETS_PER_GOAL)
            ],
        },
    )
    assert (long_ids["field"], long_ids["limit"]) == ("targets", MAX_ROW_BYTES)
    objectives = _refused(
        client,
        "/modules/m-big",
        {
            "learning_objective_ids": [
                f"lo-{i}" for i in range(MAX_OBJECTIVES_PER_MODULE + 1)
            ]
        },
    )
    assert (objectives["field"], objectives["limit"]) == (
        "learning_objective_ids",
        MAX_OBJECTIVES_PER_MODULE,
    )


def test_the_largest_allowed_goal_is_accepted(client: TestClient) -> None:
    targets = [f"lo-{i:03d}" for i in range(MAX_TARGETS_PER_GOAL)]
    body = {
        "learning_instance_id": "li-a",
        "targets": [{"learning_objective_id": t} for t in targets],
        "topics": {
            f"topic-{k}": targets[k::MAX_TOPICS_PER_GOAL]
            for k in range(MAX_TOPICS_PER_GOAL)
        },
    }
    r = client.put("/goals/goal-largest", content=orjson.dumps(body), headers=_JSON)
    assert r.status_code == 202, r.text[:500]


# A class whose rows together exceed MAX_PAGE_BYTES: written straight to the
# read model (as a worker of an older version, without the row bound, would
# have written them).
HEAVY_LEARNERS = 12
HEAVY_ROW = MAX_PAGE_BYTES // 10


async def _seed_heavy_class(url: str) -> None:
    redis = Redis.from_url(url)
    p = Projection(ReadModelKeys())
    p.learning_instance(
        LearningInstanceCreated(
            event_id="e-li-heavy",
            occurred_at=T0,
            learning_instance_id="li-heavy",
            partner_id="p1",
        )
    )
    goal = GoalDefined(
        event_id="e-goal-heavy",
        occurred_at=T0,
        goal_id="goal-heavy",
        learning_instance_id="li-heavy",
        targets=[Target(learning_objective_id="lo-1")],
    )
    p.goal(goal, _heavy_row())
    for n in range(HEAVY_LEARNERS):
        reg = f"reg-heavy-{n:02d}"
        p.registration(
            RegistrationCreated(
                event_id=f"e-{reg}",
                occurred_at=T0 + timedelta(seconds=n),
                registration_id=reg,
                learning_instance_id="li-heavy",
                user_id=f"u-{reg}",
                role="learner",
            )
        )
        p.row("li-heavy", reg, "goal-heavy", _heavy_row())
    await RedisProjector(redis).write(p)
    await redis.aclose()


def _heavy_row() -> bytes:
    return orjson.dumps(
        {
            "goal_id": "goal-heavy",
            "status": "in_progress",
            "progress": 0.5,
            "work_remaining": 3,
            "targets": [],
            "pad": "x" * HEAVY_ROW,
        }
    )


def test_a_page_over_the_byte_limit_is_a_400_naming_the_page_size(
    client: TestClient,
) -> None:
    path = "/learning-instances/li-heavy/metrics/status-and-progress"
    r = client.post(
        path, json={"goal_ids": ["goal-heavy"], "registrations_per_page": 100}
    )
    assert r.status_code == 400, r.status_code
    error = r.json()["error"]
    assert error["details"]["field"] == "registrations_per_page"
    assert error["details"]["limit"] == MAX_PAGE_BYTES
    # A smaller page of the same class is served.
    r = client.post(
        path, json={"goal_ids": ["goal-heavy"], "registrations_per_page": 5}
    )
    assert r.status_code == 200
    assert len(r.json()["data"]) == 5
