"""A learner's history end to end: a worker on Apache Kafka keeps the
timelines, the API serves them (paged, with the registration endpoint's
access rules), and ``mastery rebuild`` serves the same ones from the
changelog (docs/read-model.md, "History")."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis import Redis

from app.cli.main import main
from app.devstack.embedded_kafka import EmbeddedKafka
from app.devstack.stack import DevStack
from app.devstack.workload import simulated
from infra.read_model import ReadModelKeys
from processors.catalog import Catalog
from processors.history import HistoryPolicy, points_json
from tests.integration.helpers import (
    partner_of,
    produce,
    produce_catalog_first,
    started_stack,
    wait_until_committed,
    wait_until_rows_match,
)
from tests.oracle import expected_history

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INTERVAL_S = 5


@pytest.fixture
def stack(
    tmp_path: Path, kafka_server: EmbeddedKafka, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DevStack]:
    # The simulated clock moves 250 ms per event: 5 s intervals give points
    # between the status changes.
    monkeypatch.setenv("MASTERY_HISTORY_INTERVAL_S", str(INTERVAL_S))
    with started_stack(kafka_server, tmp_path, "hist", 4) as s:
        yield s


def _history(stack: DevStack, reg: str, token: str, **query: object) -> tuple[int, Any]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    request = urllib.request.Request(
        f"{stack.api_url}/registrations/{reg}/metrics/status-and-progress/history?{qs}",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null")


def test_timelines_are_served_as_the_oracle_keeps_them_and_rebuilt_alike(
    stack: DevStack,
) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=8, attempts_per_learner=40, seed=12
    )
    li = workload.learning_instances[0]
    partner = partner_of(workload, li)
    goals = workload.goals_of(li)
    produce_catalog_first(stack, workload)
    events = [*workload.registrations, *workload.attempts]
    produce(stack, events)
    wait_until_rows_match(stack, workload, events)
    catalog = Catalog()
    for event in workload.catalog:
        catalog.apply(event)
    expected = expected_history(
        catalog, events, HistoryPolicy(interval_us=INTERVAL_S * 1_000_000)
    )
    learners = [r for r in workload.registrations if r.role == "learner"]
    admin = stack.token(partner_id=partner)

    def served() -> dict[tuple[str, str], list[Any]]:
        out = {}
        for learner in learners:
            for goal in goals:
                status, body = _history(
                    stack, learner.registration_id, admin, goal_id=goal
                )
                assert status == 200, body
                assert body["total"] == len(body["points"])
                out[(learner.registration_id, goal)] = body["points"]
        return out

    want = {
        key: orjson.loads(points_json(expected.get(key, ())))
        for key in [(r.registration_id, g) for r in learners for g in goals]
    }
    assert sum(len(v) for v in want.values()) > 3 * len(want)
    assert served() == want

    # Paged: 2 points at a time, with "next" until the end.
    reg, goal = max(want, key=lambda k: len(want[k]))
    got: list[Any] = []
    query: dict[str, object] = {"goal_id": goal, "points_per_page": 2}
    while True:
        status, body = _history(stack, reg, admin, **query)
        assert status == 200
        got += body["points"]
        if "next" not in body:
            break
        assert body["next"]["points_per_page"] == 2
        query["point_offset"] = body["next"]["point_offset"]
    assert got == want[(reg, goal)]

    # The registration endpoint's access rules.
    learner = next(r for r in learners if r.registration_id == reg)
    other = next(r for r in learners if r.registration_id != reg)
    own = stack.token(sub=learner.user_id, partner_id=partner, roles=())
    assert _history(stack, reg, own, goal_id=goal)[0] == 200
    someone = stack.token(sub=other.user_id, partner_id=partner, roles=())
    assert _history(stack, reg, someone, goal_id=goal)[0] == 403
    stranger = stack.token(partner_id="partner-elsewhere")
    assert _history(stack, reg, stranger, goal_id=goal)[0] == 404
    instructor = next(r for r in workload.registrations if r.role == "instructor")
    as_instructor = stack.token(sub=instructor.user_id, partner_id=partner, roles=())
    assert _history(stack, reg, as_instructor, goal_id=goal)[0] == 200
    assert _history(stack, instructor.registration_id, admin, goal_id=goal)[0] == 409
    status, body = _history(stack, reg, admin, goal_id="no-such-goal")
    assert status == 404 and body["error"]["code"] == "goal_not_found"
    status, body = _history(stack, reg, admin, goal_id=goal, points_per_page=0)
    assert status == 400 and body["error"]["details"]["field"] == "points_per_page"
    assert _history(stack, reg, admin)[0] == 400  # goal_id is required

    # mastery rebuild reads the changelog: the same timelines, once the
    # worker's checkpoint has written the last states there.
    wait_until_committed(stack)
    redis = Redis.from_url(stack.redis.url)
    keys = ReadModelKeys()
    for r in learners:
        for g in goals:
            redis.delete(keys.history(r.learning_instance_id, r.registration_id, g))
    assert served() == {key: [] for key in want}
    env = stack.env()
    with pytest.MonkeyPatch.context() as mp:
        for name in (
            "KAFKA_BOOTSTRAP_SERVERS",
            "REDIS_URL",
            "MASTERY_BROKER_PROFILE",
            "MASTERY_TOPIC_PREFIX",
        ):
            mp.setenv(name, env[name])
        assert main(["rebuild"]) == 0
    assert served() == want
