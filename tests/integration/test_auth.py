"""The access rules: roles x endpoints x own / other learning instance / other
partner, over the real Redis read model and the real broker (docs/auth.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import orjson
import pytest
from starlette.testclient import TestClient

from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis
from tests.integration.auth_world import (
    GOAL_OF,
    LI_OF_REG,
    PARTNER_OF_LI,
    SETTINGS,
    api_client,
    bearer,
    seed_world,
)

pytestmark = pytest.mark.integration

CALLERS = {
    "admin_p1": bearer("adm1", "p1", ("partner_admin",)),
    "admin_p2": bearer("adm2", "p2", ("partner_admin",)),
    "instructor_a": bearer("ti-a", "p1"),
    "learner_a1": bearer("la1", "p1"),
    "ingest_p1": bearer("svc1", "p1", ("ingest",)),
    # tx is an instructor of li-x (partner p2), but holds a p1 token.
    "tx_with_p1_token": bearer("tx", "p1"),
}

# Expected status per caller for the learning-instance endpoint.
LI_EXPECTED = {
    "admin_p1": {"li-a": 200, "li-b": 200, "li-x": 404, "li-none": 404},
    "admin_p2": {"li-a": 404, "li-b": 404, "li-x": 200, "li-none": 404},
    "instructor_a": {"li-a": 200, "li-b": 403, "li-x": 404, "li-none": 404},
    "learner_a1": {"li-a": 403, "li-b": 403, "li-x": 404, "li-none": 404},
    "ingest_p1": {"li-a": 403, "li-b": 403, "li-x": 404, "li-none": 404},
    "tx_with_p1_token": {"li-a": 403, "li-b": 403, "li-x": 404, "li-none": 404},
}
# reg-a1: own registration of learner_a1; reg-a2: same LI; reg-b1: other LI of
# the partner; reg-x1: other partner.
REG_EXPECTED = {
    "admin_p1": {"reg-a1": 200, "reg-a2": 200, "reg-b1": 200, "reg-x1": 404},
    "admin_p2": {"reg-a1": 404, "reg-a2": 404, "reg-b1": 404, "reg-x1": 200},
    "instructor_a": {"reg-a1": 200, "reg-a2": 200, "reg-b1": 403, "reg-x1": 404},
    "learner_a1": {"reg-a1": 200, "reg-a2": 403, "reg-b1": 403, "reg-x1": 404},
    "ingest_p1": {"reg-a1": 403, "reg-a2": 403, "reg-b1": 403, "reg-x1": 404},
    "tx_with_p1_token": {
        "reg-a1": 403,
        "reg-a2": 403,
        "reg-b1": 403,
        "reg-x1": 404,
    },
}
FOREIGN = {
    "p1": [b"reg-x1", b"reg-tx", b"goal-x", b"li-x", b"lx1"],
    "p2": [b"reg-a1", b"reg-a2", b"reg-b1", b"goal-a", b"goal-b", b"la1", b"lb1"],
}


@pytest.fixture(scope="module")
def client(
    redis_server: EmbeddedRedis, kafka_server: EmbeddedKafka
) -> Iterator[TestClient]:
    seed_world(redis_server.url)
    with api_client(redis_server.url, kafka_server.bootstrap_servers, "auth") as c:
        yield c


def _partner(caller: str) -> str:
    return "p2" if caller == "admin_p2" else "p1"


def _assert_no_foreign(caller: str, body: bytes, asked: str) -> None:
    """No id of another partner in a response, unless the caller sent it."""
    for foreign in FOREIGN[_partner(caller)]:
        if foreign not in asked.encode():
            assert foreign not in body, (caller, foreign, body)


def _not_found_body(field: str, ident: str) -> dict[str, object]:
    return {
        "error": {
            "code": "not_found",
            "message": f"{field} {ident!r} not found",
            "details": {"field": field},
        }
    }


@pytest.mark.parametrize("caller", sorted(LI_EXPECTED))
def test_learning_instance_endpoint_matrix(client: TestClient, caller: str) -> None:
    for li, expected in LI_EXPECTED[caller].items():
        goal = GOAL_OF.get(li, "goal-a")
        r = client.post(
            f"/learning-instances/{li}/metrics/status-and-progress",
            json={"goal_ids": [goal]},
            headers=CALLERS[caller],
        )
        assert r.status_code == expected, (caller, li, r.text)
        _assert_no_foreign(caller, r.content, li)
        if expected == 404:
            # Another partner's id answers exactly like an id that never existed.
            assert r.json() == _not_found_body("li_id", li)
        if expected == 200:
            regs = {row["registration_id"] for row in r.json()["data"]}
            assert regs and all(LI_OF_REG[reg] == li for reg in regs)
            assert all(
                PARTNER_OF_LI[LI_OF_REG[reg]] == _partner(caller) for reg in regs
            )


@pytest.mark.parametrize("caller", sorted(REG_EXPECTED))
def test_registration_endpoint_matrix(client: TestClient, caller: str) -> None:
    for reg, expected in REG_EXPECTED[caller].items():
        r = client.post(
            f"/registrations/{reg}/metrics/status-and-progress",
            json={"goal_ids": [GOAL_OF[LI_OF_REG[reg]]]},
            headers=CALLERS[caller],
        )
        assert r.status_code == expected, (caller, reg, r.text)
        _assert_no_foreign(caller, r.content, reg)
        if expected == 404:
            assert r.json() == _not_found_body("reg_id", reg)
        if expected == 200:
            assert [row["registration_id"] for row in r.json()["data"]] == [reg]


def test_foreign_goal_ids_are_checked_only_after_access(client: TestClient) -> None:
    # A learner may not probe which goals belong to a learning instance.
    r = client.post(
        "/learning-instances/li-a/metrics/status-and-progress",
        json={"goal_ids": ["goal-x", "goal-unknown"]},
        headers=CALLERS["learner_a1"],
    )
    assert r.status_code == 403
    r = client.post(
        "/learning-instances/li-a/metrics/status-and-progress",
        json={"goal_ids": ["goal-x", "goal-unknown"]},
        headers=CALLERS["admin_p1"],
    )
    assert r.status_code == 404
    assert r.json()["error"]["details"]["goal_ids"] == ["goal-x", "goal-unknown"]


def _now() -> int:
    return int(time.time())


def _forge(claims: dict[str, object], key: str, alg: str) -> str:
    return jwt.encode(claims, key, algorithm=alg)


SECRET = SETTINGS.jwt_hs256_secret.get_secret_value()  # type: ignore[union-attr]
GOOD = {"sub": "adm1", "partner_id": "p1", "roles": ["partner_admin"]}
BAD_TOKENS = {
    "expired": _forge({**GOOD, "exp": _now() - 600}, SECRET, "HS256"),
    "wrongly_signed": _forge({**GOOD, "exp": _now() + 600}, "w" * 40, "HS256"),
    "alg_none": jwt.encode({**GOOD, "exp": _now() + 600}, None, algorithm="none"),
    "unknown_alg": _forge({**GOOD, "exp": _now() + 600}, SECRET, "HS384"),
    "no_exp": _forge(GOOD, SECRET, "HS256"),
    "malformed": "eyJhbGciOi.nope",
}
ENDPOINTS = [
    (
        "POST",
        "/learning-instances/li-a/metrics/status-and-progress",
        {"goal_ids": ["goal-a"]},
    ),
    (
        "POST",
        "/registrations/reg-a1/metrics/status-and-progress",
        {"goal_ids": ["goal-a"]},
    ),
    ("POST", "/learning-instances", {}),
    ("POST", "/registrations", {}),
    ("PUT", "/goals/goal-a", {}),
    ("PUT", "/modules/m-1", {}),
    ("POST", "/registrations/reg-a1/graded-events", {}),
    ("POST", "/batch-events", {"events": []}),
    ("POST", "/xapi/statements", []),
    ("POST", "/caliper/events", {}),
]


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_401_with_a_bearer_challenge(
    client: TestClient, kind: str
) -> None:
    for method, path, body in ENDPOINTS:
        r = client.request(
            method,
            path,
            json=body,
            headers={"authorization": f"Bearer {BAD_TOKENS[kind]}"},
        )
        assert r.status_code == 401, (kind, path, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert 'error="invalid_token"' in challenge
        assert b"reg-" not in r.content and b"goal-a" not in r.content


def test_missing_or_non_bearer_credentials_are_401(client: TestClient) -> None:
    for method, path, body in ENDPOINTS:
        r = client.request(method, path, json=body)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="mastery-stream"'
        r = client.request(
            method, path, json=body, headers={"authorization": "Basic YTpi"}
        )
        assert r.status_code == 401


# Ingest and admin endpoints: (method, path, body) x caller -> status.
def _graded(reg: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "module_id": "m-1",
        "is_correct": True,
        "interaction_end_time": "2026-01-02T10:00:00Z",
    }
    if reg is not None:
        body["registration_id"] = reg
    return body


ADMIN_CASES = [
    # (name, method, path, body, {caller: status})
    (
        "create_li",
        "POST",
        "/learning-instances",
        {},
        {"admin_p1": 202, "ingest_p1": 403, "instructor_a": 403, "learner_a1": 403},
    ),
    (
        "create_li_taken_by_other_partner",
        "POST",
        "/learning-instances",
        {"learning_instance_id": "li-x"},
        {"admin_p1": 409, "admin_p2": 202},
    ),
    (
        "register_in_own_li",
        "POST",
        "/registrations",
        {"learning_instance_id": "li-a", "user_id": "new-user", "role": "learner"},
        {"admin_p1": 202, "admin_p2": 404, "ingest_p1": 403, "instructor_a": 403},
    ),
    (
        "register_in_other_partner_li",
        "POST",
        "/registrations",
        {"learning_instance_id": "li-x", "user_id": "new-user", "role": "learner"},
        {"admin_p1": 404, "admin_p2": 202},
    ),
    (
        "reuse_registration_id",
        "POST",
        "/registrations",
        {
            "registration_id": "reg-a1",
            "learning_instance_id": "li-a",
            "user_id": "someone-else",
            "role": "learner",
        },
        {"admin_p1": 409},
    ),
    (
        "goal_in_own_li",
        "PUT",
        "/goals/g-new",
        {"learning_instance_id": "li-a", "targets": [{"module_id": "m-1"}]},
        {"admin_p1": 202, "admin_p2": 404, "ingest_p1": 403, "learner_a1": 403},
    ),
    (
        "goal_id_of_other_partner",
        "PUT",
        "/goals/goal-x",
        {"learning_instance_id": "li-a", "targets": [{"module_id": "m-1"}]},
        {"admin_p1": 409},
    ),
    (
        "module",
        "PUT",
        "/modules/m-1",
        {"learning_objective_ids": ["lo-1"]},
        {"admin_p1": 202, "ingest_p1": 403, "instructor_a": 403},
    ),
    (
        "graded_event_own",
        "POST",
        "/registrations/reg-a1/graded-events",
        _graded(),
        {
            "admin_p1": 202,
            "ingest_p1": 202,
            "admin_p2": 404,
            "instructor_a": 403,
            "learner_a1": 403,
        },
    ),
    (
        "graded_event_other_partner",
        "POST",
        "/registrations/reg-x1/graded-events",
        _graded(),
        {"admin_p1": 404, "ingest_p1": 404, "admin_p2": 202},
    ),
    (
        "graded_event_instructor_registration",
        "POST",
        "/registrations/reg-ti-a/graded-events",
        _graded(),
        {"admin_p1": 409},
    ),
    (
        "graded_event_foreign_goal",
        "POST",
        "/registrations/reg-a1/graded-events",
        {**_graded(), "goal_id": "goal-x"},
        {"admin_p1": 404},
    ),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "expected"),
    ADMIN_CASES,
    ids=[c[0] for c in ADMIN_CASES],
)
def test_admin_and_ingest_matrix(
    client: TestClient,
    name: str,
    method: str,
    path: str,
    body: dict[str, object],
    expected: dict[str, int],
) -> None:
    for caller, status in expected.items():
        r = client.request(method, path, json=body, headers=CALLERS[caller])
        assert r.status_code == status, (name, caller, r.text)
        _assert_no_foreign(caller, r.content, path + orjson.dumps(body).decode())
        if status == 202:
            assert r.json()["status"] == "accepted"
        if name == "create_li" and status == 202:
            assert r.json()["partner_id"] == _partner(caller)


def test_batch_rejects_other_partners_registrations_like_unknown_ones(
    client: TestClient,
) -> None:
    events = [_graded("reg-a1"), _graded("reg-x1"), _graded("reg-none"), {"x": 1}]
    for caller in ("admin_p1", "ingest_p1"):
        r = client.post(
            "/batch-events", json={"events": events}, headers=CALLERS[caller]
        )
        assert r.status_code == 207
        results = r.json()["results"]
        assert [x["status"] for x in results] == [
            "accepted",
            "rejected",
            "rejected",
            "rejected",
        ]
        foreign, unknown = results[1], results[2]
        assert foreign["code"] == unknown["code"] == "registration_not_found"
        assert foreign["reason"].replace("reg-x1", "ID") == unknown["reason"].replace(
            "reg-none", "ID"
        )
    for path, body in [("/batch-events", {"events": events}), ("/xapi/statements", [])]:
        r = client.post(path, json=body, headers=CALLERS["learner_a1"])
        assert r.status_code == 403
