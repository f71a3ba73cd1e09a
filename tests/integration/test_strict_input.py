"""The API's validation is exactly as documented (docs/ingest.md; issue 10,
point 11): ids with control or format characters, numeric timestamps, strict
booleans, xAPI scores, and ``Content-Type: application/json`` on every JSON
endpoint. The real app over the real Redis and broker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis
from tests.integration.auth_world import api_client, bearer, seed_world

pytestmark = pytest.mark.integration

ADMIN = bearer("adm1", "p1", ("partner_admin", "ingest"))
JSON = {"content-type": "application/json"}
GRADED = "/registrations/reg-a1/graded-events"
ATTEMPT: dict[str, Any] = {
    "module_id": "https://example.org/items/7",
    "is_correct": True,
    "interaction_end_time": "2026-09-01T08:00:03Z",
}


@pytest.fixture(scope="module")
def client(
    redis_server: EmbeddedRedis, kafka_server: EmbeddedKafka
) -> Iterator[TestClient]:
    seed_world(redis_server.url)
    with api_client(redis_server.url, kafka_server.bootstrap_servers, "strict") as c:
        c.headers.update(ADMIN)
        yield c


def _post(client: TestClient, path: str, body: object) -> tuple[int, Any]:
    r = client.post(path, content=orjson.dumps(body), headers=JSON)
    return r.status_code, r.json()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("module_id", "mod\x00ule"),
        ("module_id", "mod\u200bule"),
        ("module_id", "\ufeffmod"),
        ("goal_id", "goal-a\u200c"),
        ("attempt_id", "att\x00"),
        ("is_correct", "no"),
        ("is_correct", 1),
        ("interaction_end_time", 1_788_249_603),
        ("interaction_end_time", "1788249603"),
        ("interaction_end_time", "2026-09-01T08:00:03"),
    ],
)
def test_graded_event_fields_are_refused_as_documented(
    client: TestClient, field: str, value: object
) -> None:
    status, body = _post(client, GRADED, {**ATTEMPT, field: value})
    assert status == 400, body
    assert field in body["error"]["message"]


def test_a_batch_refuses_such_items_one_by_one(client: TestClient) -> None:
    items = [
        {**ATTEMPT, "registration_id": "reg-a1", "module_id": "m\u200b1"},
        {**ATTEMPT, "registration_id": "reg-a1", "interaction_end_time": 1.7e9},
        {**ATTEMPT, "registration_id": "reg-a1", "is_correct": 0},
    ]
    status, body = _post(client, "/batch-events", {"events": items})
    assert status == 207
    assert [r["code"] for r in body["results"]] == ["invalid"] * 3
    for result, field in zip(
        body["results"],
        ["module_id", "interaction_end_time", "is_correct"],
        strict=True,
    ):
        assert field in result["reason"]


def _statement(**result: object) -> dict[str, Any]:
    return {
        "verb": {"id": "http://adlnet.gov/expapi/verbs/answered"},
        "object": {"id": "https://example.org/items/7"},
        "context": {"registration": "reg-a1"},
        "timestamp": "2026-09-01T08:00:03Z",
        "result": result,
    }


@pytest.mark.parametrize(
    ("score", "message"),
    [
        ({"scaled": 1e308}, "scaled must lie in [-1, 1]"),
        ({"scaled": -1e308}, "scaled must lie in [-1, 1]"),
        ({"scaled": 1.0001}, "scaled must lie in [-1, 1]"),
        ({"scaled": "1"}, "scaled must be a finite number"),
        ({"raw": 5, "min": 0, "max": 0}, "min must be less than"),
        ({"raw": 11, "min": 0, "max": 10}, "raw must lie between"),
    ],
)
def test_xapi_scores_outside_the_spec_are_refused(
    client: TestClient, score: dict[str, object], message: str
) -> None:
    status, body = _post(client, "/xapi/statements", [_statement(score=score)])
    assert status == 207
    (result,) = body["results"]
    assert (result["status"], result["code"]) == ("rejected", "invalid")
    assert message in result["reason"]


def test_xapi_numeric_timestamps_are_refused(client: TestClient) -> None:
    statements = [
        {**_statement(success=True), "timestamp": 1_788_249_603},
        {**_statement(success=True), "timestamp": "1788249603"},
    ]
    status, body = _post(client, "/xapi/statements", statements)
    assert status == 207
    for result in body["results"]:
        assert result["code"] == "invalid"
        assert "interaction_end_time (from timestamp)" in result["reason"]


def test_xapi_scores_within_the_spec_are_accepted(client: TestClient) -> None:
    statements = [
        _statement(score={"scaled": -1}),
        _statement(score={"scaled": 1, "raw": 10, "min": 0, "max": 10}),
    ]
    status, body = _post(client, "/xapi/statements", statements)
    assert status == 207
    assert body["accepted"] == 2, body


PATHS = [
    ("POST", "/learning-instances/li-a/metrics/status-and-progress"),
    ("POST", "/registrations/reg-a1/metrics/status-and-progress"),
    ("POST", "/learning-instances"),
    ("POST", "/registrations"),
    ("PUT", "/goals/goal-a"),
    ("PUT", "/modules/m-1"),
    ("POST", GRADED),
    ("POST", "/batch-events"),
    ("POST", "/xapi/statements"),
    ("POST", "/caliper/events"),
]


@pytest.mark.parametrize(("method", "path"), PATHS)
@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"],
)
def test_json_endpoints_require_the_json_media_type(
    client: TestClient, method: str, path: str, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    r = client.request(method, path, content=b"{}", headers=headers)
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_media_type"


def test_the_json_media_type_may_carry_parameters(client: TestClient) -> None:
    r = client.post(
        "/registrations/reg-a1/metrics/status-and-progress",
        content=b'{"goal_ids": ["goal-a"]}',
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        (
            "/registrations",
            b'{"registration_id": "reg-dup", "learning_instance_id": "li-a", '
            b'"user_id": "u-dup", "role": "learner", "role": "instructor"}',
            "role",
        ),
        (
            GRADED,
            b'{"module_id": "m-1", "is_correct": false, "is_correct": true, '
            b'"interaction_end_time": "2026-09-01T08:00:03Z"}',
            "is_correct",
        ),
        (
            "/registrations/reg-a1/metrics/status-and-progress",
            b'{"goal_ids": ["goal-x"], "goal_ids": ["goal-a"]}',
            "goal_ids",
        ),
    ],
)
def test_a_body_that_repeats_a_key_is_a_400_naming_it(
    client: TestClient, path: str, body: bytes, key: str
) -> None:
    r = client.post(path, content=body, headers=JSON)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["details"] == {"field": key}
    assert repr(key) in error["message"]
    # The same body without the repetition is accepted.
    r = client.post(path, content=orjson.dumps(orjson.loads(body)), headers=JSON)
    assert r.status_code in (200, 202), r.text


@pytest.mark.parametrize("depth", [900, 1010, 1024])
def test_a_deeply_nested_body_is_a_400_not_a_500(
    client: TestClient, depth: int
) -> None:
    """The duplicate-key pass must not turn nesting that orjson accepts (up to
    1,024 levels) into a RecursionError."""
    body = b'{"goal_ids": ["goal-a"], "x": ' + b"[" * depth + b"]" * depth + b"}"
    r = client.post(
        "/registrations/reg-a1/metrics/status-and-progress",
        content=body,
        headers=JSON,
    )
    assert r.status_code == 400, r.text[:300]
