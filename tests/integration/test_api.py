"""The two status-and-progress endpoints, through Starlette's TestClient, over a
real Redis seeded by the worker's own projector, called as a partner admin
(access rules per role: tests/integration/test_auth.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from redis.asyncio import Redis
from starlette.testclient import TestClient

from api.app import create_app
from api.auth import BearerAuthenticator
from api.store import RedisPageStore
from api.tokens import verifier_from_settings
from app.devstack.embedded import free_port
from infra.read_model import Projection, ReadModelKeys, RedisProjector
from infra.settings import Settings
from infra.tokens import mint_token
from schemas.events import (
    GoalDefined,
    LearningInstanceCreated,
    RegistrationCreated,
    Target,
)
from tests.conftest import RedisTarget

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LI, OTHER_LI = "li-1", "li-2"
GOALS = ["goal-a", "goal-b"]
LEARNERS = [f"reg-{i:02d}" for i in range(7)]
SETTINGS = Settings(jwt_hs256_secret="test-secret-" + "x" * 32)
AUTHN = BearerAuthenticator(verifier_from_settings(SETTINGS))
ADMIN = {
    "authorization": "Bearer "
    + mint_token(SETTINGS, sub="admin-1", partner_id="p1", roles=["partner_admin"])
}


def _item(goal_id: str, reg: str) -> bytes:
    # Stand-in rows with a recognisable payload; the API must pass them through
    # byte for byte.
    return orjson.dumps(
        {
            "goal_id": goal_id,
            "status": "in_progress",
            "progress": 0.5,
            "work_remaining": 3,
            "targets": [],
            "_reg": reg,
        }
    )


def _template(goal_id: str) -> bytes:
    return orjson.dumps(
        {
            "goal_id": goal_id,
            "status": "no_work",
            "progress": 0.0,
            "work_remaining": -1,
            "targets": [],
        }
    )


async def _seed(target: RedisTarget) -> None:
    redis = target.client()
    await redis.flushall()
    # what a worker's repair pass sets once the read model is whole
    await redis.set(ReadModelKeys().materialized(), b"{}")
    p = Projection(ReadModelKeys())
    for li in (LI, OTHER_LI):
        p.learning_instance(
            LearningInstanceCreated(
                event_id=f"e-{li}",
                occurred_at=T0,
                learning_instance_id=li,
                partner_id="p1",
            )
        )
    for gid, li in [(GOALS[0], LI), (GOALS[1], LI), ("goal-other", OTHER_LI)]:
        goal = GoalDefined(
            event_id=f"e-{gid}",
            occurred_at=T0,
            goal_id=gid,
            learning_instance_id=li,
            targets=[Target(learning_objective_id="lo-1")],
        )
        p.goal(goal, _template(gid))
    # Created in reverse id order, to prove ordering is by creation, not by id.
    for n, reg in enumerate(reversed(LEARNERS)):
        p.registration(
            RegistrationCreated(
                event_id=f"e-{reg}",
                occurred_at=T0 + timedelta(seconds=n),
                registration_id=reg,
                learning_instance_id=LI,
                user_id=f"u-{reg}",
                role="learner",
            )
        )
    p.registration(
        RegistrationCreated(
            event_id="e-instr",
            occurred_at=T0,
            registration_id="reg-instructor",
            learning_instance_id=LI,
            user_id="teacher",
            role="instructor",
        )
    )
    for reg in LEARNERS[1:]:  # reg-00 has no row yet: the template is served
        for gid in GOALS:
            p.row(LI, reg, gid, _item(gid, reg))
    await RedisProjector(redis).write(p)
    await redis.aclose()


@pytest.fixture(scope="module")
def client(redis_target: RedisTarget) -> Iterator[TestClient]:
    """The API over one valkey, then over a three-master Redis Cluster."""
    asyncio.run(_seed(redis_target))
    redis = redis_target.client()
    app = create_app(RedisPageStore(redis), authenticator=AUTHN, max_request_bytes=4096)
    with TestClient(app, headers=ADMIN) as c:
        yield c


def _li(client: TestClient, body: object, li: str = LI) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = client.post(
        f"/learning-instances/{li}/metrics/status-and-progress",
        content=orjson.dumps(body),
        headers={"content-type": "application/json"},
    )
    return r.status_code, r.json()


CREATION_ORDER = list(reversed(LEARNERS))


def test_first_page_defaults_to_100_rows_in_creation_order(client: TestClient) -> None:
    status, body = _li(client, {"goal_ids": GOALS})
    assert status == 200
    assert body["query"] == {"goal_ids": GOALS}
    assert body["column_headers"] == GOALS
    assert [row["registration_id"] for row in body["data"]] == CREATION_ORDER
    assert "next" not in body
    for row in body["data"]:
        assert [item["goal_id"] for item in row["status_and_progress"]] == GOALS


def test_rows_pass_through_and_missing_rows_get_the_template(
    client: TestClient,
) -> None:
    _, body = _li(client, {"goal_ids": GOALS})
    by_reg = {
        row["registration_id"]: row["status_and_progress"] for row in body["data"]
    }
    assert by_reg["reg-03"][1] == orjson.loads(_item("goal-b", "reg-03"))
    assert by_reg["reg-00"] == [orjson.loads(_template(g)) for g in GOALS]


def test_paging_with_string_page_size_walks_every_row_once(client: TestClient) -> None:
    seen: list[str] = []
    body_in: dict[str, object] = {"goal_ids": [GOALS[1]], "registrations_per_page": "3"}
    pages = 0
    while True:
        status, body = _li(client, body_in)
        assert status == 200
        assert body["query"] == body_in
        pages += 1
        seen += [row["registration_id"] for row in body["data"]]
        if "next" not in body:
            break
        assert body["next"]["registrations_per_page"] == 3
        body_in = {
            "goal_ids": [GOALS[1]],
            "registrations_per_page": "3",
            "registration_offset": body["next"]["registration_offset"],
        }
    assert pages == 3
    assert seen == CREATION_ORDER


def test_column_order_follows_the_request(client: TestClient) -> None:
    _, body = _li(client, {"goal_ids": list(reversed(GOALS))})
    assert body["column_headers"] == list(reversed(GOALS))
    assert [i["goal_id"] for i in body["data"][1]["status_and_progress"]] == list(
        reversed(GOALS)
    )


def test_offset_past_the_end_gives_an_empty_last_page(client: TestClient) -> None:
    status, body = _li(client, {"goal_ids": GOALS, "registration_offset": 50})
    assert status == 200
    assert body["data"] == []
    assert "next" not in body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "goal_ids"),
        ({"goal_ids": []}, "goal_ids"),
        ({"goal_ids": "goal-a"}, "goal_ids"),
        ({"goal_ids": ["goal-a", "goal-a"]}, "goal_ids"),
        ({"goal_ids": ["bad id with spaces"]}, "goal_ids.0"),
        ({"goal_ids": GOALS, "registrations_per_page": 101}, "registrations_per_page"),
        ({"goal_ids": GOALS, "registrations_per_page": 0}, "registrations_per_page"),
        (
            {"goal_ids": GOALS, "registrations_per_page": "ten"},
            "registrations_per_page",
        ),
        ({"goal_ids": GOALS, "registrations_per_page": True}, "registrations_per_page"),
        ({"goal_ids": GOALS, "registration_offset": -1}, "registration_offset"),
        ({"goal_ids": GOALS, "colour": "red"}, "colour"),
        ([GOALS], "body"),
    ],
)
def test_bad_bodies_get_400_naming_the_field(
    client: TestClient, body: object, field: str
) -> None:
    status, err = _li(client, body)
    assert status == 400
    assert err["error"]["code"] == "invalid_request"
    assert field in err["error"]["message"]


def test_invalid_json_is_a_400(client: TestClient) -> None:
    r = client.post(
        f"/learning-instances/{LI}/metrics/status-and-progress",
        content=b"{nope",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["details"] == {"field": "body"}


def test_oversized_body_is_a_413(client: TestClient) -> None:
    status, err = _li(client, {"goal_ids": GOALS, "pad": "x" * 5000})
    assert status == 413
    assert err["error"]["code"] == "payload_too_large"


def test_unknown_learning_instance_is_a_404(client: TestClient) -> None:
    status, err = _li(client, {"goal_ids": GOALS}, li="li-nope")
    assert status == 404
    assert err["error"]["details"] == {"field": "li_id"}


def test_goal_of_another_learning_instance_is_a_404_naming_it(
    client: TestClient,
) -> None:
    status, err = _li(client, {"goal_ids": ["goal-a", "goal-other", "goal-zzz"]})
    assert status == 404
    assert err["error"]["code"] == "goal_not_found"
    assert err["error"]["details"]["goal_ids"] == ["goal-other", "goal-zzz"]


def test_registration_endpoint_returns_one_row(client: TestClient) -> None:
    r = client.post(
        "/registrations/reg-04/metrics/status-and-progress",
        json={"goal_ids": [GOALS[1]]},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["query"] == {"goal_ids": [GOALS[1]]}
    assert body["column_headers"] == [GOALS[1]]
    assert len(body["data"]) == 1
    assert body["data"][0]["registration_id"] == "reg-04"
    assert body["data"][0]["status_and_progress"] == [
        orjson.loads(_item(GOALS[1], "reg-04"))
    ]
    assert "next" not in body


def test_registration_endpoint_errors(client: TestClient) -> None:
    r = client.post(
        "/registrations/reg-nope/metrics/status-and-progress", json={"goal_ids": GOALS}
    )
    assert r.status_code == 404
    assert r.json()["error"]["details"] == {"field": "reg_id"}
    r = client.post(
        "/registrations/reg-04/metrics/status-and-progress",
        json={"goal_ids": ["goal-other"]},
    )
    assert r.status_code == 404
    r = client.post(
        "/registrations/reg-04/metrics/status-and-progress",
        json={"goal_ids": GOALS, "registrations_per_page": 2},
    )
    assert r.status_code == 400  # paging fields belong to the other endpoint


def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    r = client.get(f"/learning-instances/{LI}/metrics/status-and-progress")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"
    r = client.post("/nothing-here", json={})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_redis_unreachable_is_a_503_not_a_500() -> None:
    dead = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5
    )
    app = create_app(RedisPageStore(dead), authenticator=AUTHN)
    with TestClient(app, headers=ADMIN) as c:
        r = c.post(
            f"/learning-instances/{LI}/metrics/status-and-progress",
            json={"goal_ids": GOALS},
        )
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "read_model_unavailable"
    assert r.headers["retry-after"] == "1"


def test_an_instructor_s_registration_has_no_row_on_either_endpoint(
    client: TestClient,
) -> None:
    """Issue 18, point 3: the listing's rows are the learners' registrations
    (docs/read-model.md, "Who has a row"), so the registration endpoint has no
    row for an instructor's registration either: 409, after the access check."""
    _, listing = _li(client, {"goal_ids": GOALS})
    assert "reg-instructor" not in [r["registration_id"] for r in listing["data"]]
    r = client.post(
        "/registrations/reg-instructor/metrics/status-and-progress",
        json={"goal_ids": GOALS},
    )
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "registration_not_a_learner"
    assert error["details"] == {"field": "reg_id"}
    # Another partner's admin learns nothing: the same 404 as an unknown id.
    other = {
        "authorization": "Bearer "
        + mint_token(SETTINGS, sub="admin-9", partner_id="p9", roles=["partner_admin"])
    }
    r = client.post(
        "/registrations/reg-instructor/metrics/status-and-progress",
        json={"goal_ids": GOALS},
        headers=other,
    )
    assert r.status_code == 404
