"""One partner cannot touch another (docs/auth.md, "Ownership"), real processes.

Partner A runs every write endpoint of the API, and produces every event type
straight to Kafka, against partner B's ids (learning instance, registration,
goal, module, learning objective and its parameters); B's part of the read
model must stay byte-identical. Then the id race of issue 10, point 4: while
the worker is stopped, B and then A create the same registration and goal
ids; after catch-up B owns both and A's creations are dead-lettered.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from redis import Redis

from app.cli.dlq import pending_dead_letters
from app.devstack.stack import DevStack
from infra.broker import KAFKA
from infra.read_model import ReadModelKeys
from infra.topic_names import TopicNames
from schemas.events import (
    AttemptGraded,
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    RegistrationCreated,
    Target,
)
from tests import waiting
from tests.integration.helpers import produce
from tests.reliability.readmodel import dump_read_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = ReadModelKeys()
NOW = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
#: Parameters far from the defaults: if they reached B's objective, B's rows
#: would change at once.
EXTREME = {"prior": 0.0001, "learn": 0.0001, "guess": 0.4999, "slip": 0.4999}
B_PARAMS = {"prior": 0.3, "learn": 0.2, "guess": 0.2, "slip": 0.1}


def call(
    stack: DevStack, method: str, path: str, body: object, token: str
) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{stack.api_url}{path}",
        data=orjson.dumps(body),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
        },
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null")


def wait_for(what: str, ready: Callable[[], bool], timeout_s: float = 60) -> None:
    waiting.wait_for(ready, timeout_s=timeout_s, interval_s=0.2, what=what)


def projected(stack: DevStack, *keys: str) -> Callable[[], bool]:
    redis = Redis.from_url(stack.redis.url)
    return lambda: all(redis.exists(k) for k in keys)


def has_work(stack: DevStack, li: str, reg: str, goal: str) -> Callable[[], bool]:
    """Has the registration's row for the goal counted an attempt?"""
    redis = Redis.from_url(stack.redis.url)

    def check() -> bool:
        raw = redis.get(KEYS.row(li, reg, goal))
        return raw is not None and orjson.loads(raw)["status"] != "no_work"

    return check


def owned_by(ids: set[str], model: dict[str, Any]) -> dict[str, Any]:
    """The read-model keys naming any of ``ids`` (one ``:``-separated part)."""
    return {
        k: v
        for k, v in model.items()
        if ids & set(k.replace("{", "").replace("}", "").split(":"))
    }


def settled(stack: DevStack, quiet_s: float = 3.0, timeout_s: float = 60) -> None:
    """Wait until the read model has not changed for ``quiet_s``."""
    deadline = time.monotonic() + timeout_s
    last = dump_read_model(stack.redis.url)
    since = time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, "the read model never settled"
        time.sleep(0.5)
        now = dump_read_model(stack.redis.url)
        if now != last:
            last, since = now, time.monotonic()


def dead_letters(stack: DevStack, count: int) -> list[str]:
    """Wait for ``count`` dead letters; their reasons."""
    topics = TopicNames(stack.settings.topic_prefix)

    def read() -> list[str]:
        view = asyncio.run(
            pending_dead_letters(stack.kafka.bootstrap_servers, topics, KAFKA)
        )
        return [d.reason for d in view.pending]

    reasons = waiting.wait_for(
        read,
        accept=lambda reasons: len(reasons) >= count,
        timeout_s=60,
        interval_s=0.5,
        what=f"{count} dead letters",
    )
    assert len(reasons) == count, reasons
    return reasons


def graded(n: int, module: str, goal: str, correct: bool = True) -> dict[str, Any]:
    return {
        "attempt_id": f"att-{module}-{n}",
        "module_id": module,
        "is_correct": correct,
        "interaction_end_time": "2026-09-01T08:00:03Z",
        "goal_id": goal,
    }


def build_partner(stack: DevStack, p: str, token: str) -> None:
    """li-{p}, mod-{p} on lo-{p}1 (own parameters), goal-{p}, learner reg-{p}1
    with three attempts; waits until the worker has projected it all."""
    ok = {202}
    li, mod, lo = f"li-{p}", f"mod-{p}", f"lo-{p}1"
    goal, reg = f"goal-{p}", f"reg-{p}1"
    status, _ = call(
        stack, "POST", "/learning-instances", {"learning_instance_id": li}, token
    )
    assert status in ok
    wait_for(li, projected(stack, KEYS.learning_instance(li)))
    body = {"learning_objective_ids": [lo], "parameters": {lo: B_PARAMS}}
    assert call(stack, "PUT", f"/modules/{mod}", body, token)[0] in ok
    goal_body = {
        "learning_instance_id": li,
        "targets": [{"learning_objective_id": lo}],
        "completion_criteria": {"min_predicted_mastery": 0.95},
    }
    assert call(stack, "PUT", f"/goals/{goal}", goal_body, token)[0] in ok
    reg_body = {
        "registration_id": reg,
        "learning_instance_id": li,
        "user_id": f"u-{p}1",
        "role": "learner",
    }
    assert call(stack, "POST", "/registrations", reg_body, token)[0] in ok
    wait_for(reg, projected(stack, KEYS.registration(reg), KEYS.goal(goal)))
    for n in range(3):
        path = f"/registrations/{reg}/graded-events"
        assert call(stack, "POST", path, graded(n, mod, goal, n != 1), token)[0] in ok

    wait_for(f"{reg}'s row", has_work(stack, li, reg, goal))


def test_partner_a_cannot_change_partner_bs_rows(stack: DevStack) -> None:
    admin_a = stack.token(sub="admin-a", partner_id="pa")
    ingest_a = stack.token(sub="svc-a", partner_id="pa", roles=("ingest",))
    admin_b = stack.token(sub="admin-b", partner_id="pb")
    stack.start_worker()
    build_partner(stack, "b", admin_b)
    build_partner(stack, "a", admin_a)
    settled(stack)
    b_ids = {"li-b", "reg-b1", "goal-b"}
    before = owned_by(b_ids, dump_read_model(stack.redis.url))
    assert KEYS.row("li-b", "reg-b1", "goal-b") in before, before

    # -- every write endpoint, as A, against B's ids --------------------------
    foreign_goal = {
        "learning_instance_id": "li-b",
        "targets": [{"learning_objective_id": "lo-b1"}],
    }
    own_goal_on_b_objective = {
        "learning_instance_id": "li-a",
        "targets": [{"learning_objective_id": "lo-b1"}],
        "completion_criteria": {"min_predicted_mastery": 0.5},
    }
    retag = {"learning_objective_ids": ["lo-b1"], "parameters": {"lo-b1": EXTREME}}
    xapi = {
        "id": "5d5c3e0a-9b1f-4c34-8a7e-2f7d1f0c9a11",
        "actor": {"mbox": "mailto:a@example.org"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/answered"},
        "object": {"objectType": "Activity", "id": "mod-b"},
        "result": {"success": True},
        "context": {"registration": "reg-b1"},
        "timestamp": "2026-09-01T08:05:00Z",
    }
    caliper = {
        "sensor": "https://example.org/sensors/lms",
        "sendTime": "2026-09-01T08:10:00.000Z",
        "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p2",
        "data": [
            {
                "@context": "http://purl.imsglobal.org/ctx/caliper/v1p2",
                "id": "urn:uuid:6b4a3a4e-2b1f-4a8c-9f53-1c0d9e8f7a62",
                "type": "AssessmentItemEvent",
                "action": "Completed",
                "actor": "https://example.org/users/a",
                "object": "mod-b",
                "generated": {
                    "id": "https://example.org/responses/77",
                    "type": "Response",
                    "endedAtTime": "2026-09-01T08:09:50.000Z",
                },
                "eventTime": "2026-09-01T08:09:51.000Z",
                "extensions": {"registrationId": "reg-b1", "isCorrect": True},
            }
        ],
    }
    cases: list[tuple[str, str, object, str, int]] = [
        ("POST", "/learning-instances", {"learning_instance_id": "li-b"}, admin_a, 409),
        (
            "POST",
            "/registrations",
            {"learning_instance_id": "li-b", "user_id": "u-a9", "role": "learner"},
            admin_a,
            404,
        ),
        (
            "POST",
            "/registrations",
            {
                "registration_id": "reg-b1",
                "learning_instance_id": "li-a",
                "user_id": "u-a9",
                "role": "learner",
            },
            admin_a,
            409,
        ),
        ("PUT", "/goals/goal-b", own_goal_on_b_objective, admin_a, 409),
        ("PUT", "/goals/goal-new", foreign_goal, admin_a, 404),
        # A's own goal on an objective id B uses, and A's own modules of B's
        # ids: accepted, and A's own.
        ("PUT", "/goals/goal-a2", own_goal_on_b_objective, admin_a, 202),
        ("PUT", "/modules/mod-b", retag, admin_a, 202),
        ("PUT", "/modules/mod-a", retag, admin_a, 202),
        (
            "POST",
            "/registrations/reg-b1/graded-events",
            graded(9, "mod-b", "goal-b"),
            ingest_a,
            404,
        ),
        (
            "POST",
            "/batch-events",
            {"events": [{"registration_id": "reg-b1", **graded(8, "mod-b", "goal-b")}]},
            ingest_a,
            207,
        ),
        ("POST", "/xapi/statements", xapi, ingest_a, 207),
        ("POST", "/caliper/events", caliper, ingest_a, 207),
    ]
    for method, path, body, token, expected in cases:
        status, answer = call(stack, method, path, body, token)
        assert status == expected, (method, path, status, answer)
        if status == 207:  # every item refused, as for an unknown registration
            assert answer["accepted"] == 0, answer
            assert {r["code"] for r in answer["results"]} == {
                "registration_not_found"
            }, answer
        if status == 404:  # the same answer as an unknown id
            assert answer["error"]["code"] in {"not_found", "registration_not_found"}

    # -- every event type, straight to Kafka, as A against B's ids ------------
    hostile = [
        LearningInstanceCreated(
            event_id="h-li",
            occurred_at=NOW,
            learning_instance_id="li-b",
            partner_id="pa",
        ),
        GoalDefined(
            event_id="h-goal",
            occurred_at=NOW,
            goal_id="goal-b",
            learning_instance_id="li-a",
            targets=[Target(learning_objective_id="lo-b1")],
        ),
        ModuleTagged(
            event_id="h-mod",
            occurred_at=NOW,
            partner_id="pa",
            module_id="mod-b",
            learning_objective_ids=["lo-b1"],
            parameters={"lo-b1": EXTREME},  # type: ignore[dict-item]
        ),
        RegistrationCreated(
            event_id="h-reg",
            occurred_at=NOW,
            registration_id="reg-b1",
            learning_instance_id="li-a",
            user_id="u-a9",
            role="learner",
        ),
        AttemptGraded(  # A's learner, B's goal
            event_id="h-att",
            occurred_at=NOW,
            attempt_id="h-att-1",
            registration_id="reg-a1",
            module_id="mod-b",
            is_correct=True,
            interaction_end_time=NOW,
            goal_id="goal-b",
        ),
    ]
    produce(stack, hostile)
    reasons = dead_letters(stack, 4)
    assert sorted(reasons) == sorted(
        [
            "learning_instance_id 'li-b' already belongs to another partner "
            "(the first creation keeps it)",
            "goal_id 'goal-b' already belongs to another partner "
            "(the first definition keeps it)",
            "registration_id 'reg-b1' already exists with another learning "
            "instance, user or role (the first creation keeps it)",
            "unknown goal 'goal-b'",
        ]
    )
    settled(stack)
    after = owned_by(b_ids, dump_read_model(stack.redis.url))
    assert after == before  # byte-identical

    # B is untouched, not frozen: its next attempt still moves its row.
    path = "/registrations/reg-b1/graded-events"
    assert call(stack, "POST", path, graded(7, "mod-b", "goal-b"), admin_b)[0] == 202
    redis = Redis.from_url(stack.redis.url)
    wait_for(
        "B's next attempt",
        lambda: (
            redis.get(KEYS.row("li-b", "reg-b1", "goal-b"))
            != before[KEYS.row("li-b", "reg-b1", "goal-b")]
        ),
    )


def test_an_id_race_while_the_worker_lags_is_won_by_the_first_in_the_log(
    stack: DevStack,
) -> None:
    admin_a = stack.token(sub="admin-a", partner_id="pa")
    admin_b = stack.token(sub="admin-b", partner_id="pb")
    worker = stack.start_worker()
    build_partner(stack, "b", admin_b)
    build_partner(stack, "a", admin_a)
    stack.stop_worker(worker)

    # B, then A, create the same registration and goal ids; the read model
    # does not show them yet, so the API accepts both.
    goal = {"targets": [{"learning_objective_id": "lo-b1"}]}
    reg = {"registration_id": "reg-race", "user_id": "u-race", "role": "learner"}
    for li, token in (("li-b", admin_b), ("li-a", admin_a)):
        body = {**goal, "learning_instance_id": li}
        assert call(stack, "PUT", "/goals/goal-race", body, token)[0] == 202
        body = {**reg, "learning_instance_id": li}
        assert call(stack, "POST", "/registrations", body, token)[0] == 202

    stack.start_worker()
    reasons = dead_letters(stack, 2)
    assert sorted(reasons) == [
        "goal_id 'goal-race' already belongs to another partner "
        "(the first definition keeps it)",
        "registration_id 'reg-race' already exists with another learning "
        "instance, user or role (the first creation keeps it)",
    ]
    redis = Redis.from_url(stack.redis.url)
    wait_for("the race's projection", projected(stack, KEYS.registration("reg-race")))
    assert redis.get(KEYS.goal("goal-race")) == b"li-b"
    fact = redis.get(KEYS.registration("reg-race"))
    assert fact is not None and orjson.loads(fact)["learning_instance_id"] == "li-b"

    # A's writes to the ids it lost are answered like unknown ids; B's apply.
    path = "/registrations/reg-race/graded-events"
    attempt = graded(1, "mod-b", "goal-race")
    status, answer = call(stack, "POST", path, attempt, admin_a)
    assert status == 404 and answer["error"]["code"] == "not_found", answer
    assert call(stack, "POST", path, attempt, admin_b)[0] == 202

    wait_for(
        "B's attempt on the id it won", has_work(stack, "li-b", "reg-race", "goal-race")
    )
