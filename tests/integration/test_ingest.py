"""Ingest endpoints against the real broker: docs/ingest.md's examples are
executed here (status, response fields, the events found on Kafka), plus batch
limits and a broker outage."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from infra.read_model import Projection, ReadModelKeys, RedisProjector
from infra.topic_names import TopicNames
from schemas.events import (
    GoalDefined,
    LearningInstanceCreated,
    RegistrationCreated,
    Target,
)
from tests.integration.auth_world import api_client, bearer

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "ingest.md"
PREFIX = "ingestdocs"
ADMIN = bearer("admin-p1", "p1", ("partner_admin",))
T0 = datetime.fromisoformat("2026-09-01T00:00:00+00:00")


async def _seed(url: str) -> None:
    redis = Redis.from_url(url)
    await redis.flushall()
    # what a worker's repair pass sets once the read model is whole
    await redis.set(ReadModelKeys().materialized(), b"{}")
    p = Projection(ReadModelKeys())
    p.learning_instance(
        LearningInstanceCreated(
            event_id="e1",
            occurred_at=T0,
            learning_instance_id="li-algebra-1",
            partner_id="p1",
        )
    )
    p.learning_instance(
        LearningInstanceCreated(
            event_id="e2", occurred_at=T0, learning_instance_id="li-p2", partner_id="p2"
        )
    )
    p.goal(
        GoalDefined(
            event_id="e3",
            occurred_at=T0,
            goal_id="goal-fractions",
            learning_instance_id="li-algebra-1",
            targets=[Target(learning_objective_id="lo-add-fractions")],
        ),
        b"{}",
    )
    p.registration(
        RegistrationCreated(
            event_id="e4",
            occurred_at=T0,
            registration_id="reg-0001",
            learning_instance_id="li-algebra-1",
            user_id="student-7",
            role="learner",
        )
    )
    await RedisProjector(redis).write(p)
    await redis.aclose()


@pytest.fixture(scope="module")
def client(
    redis_server: EmbeddedRedis, kafka_server: EmbeddedKafka
) -> Iterator[TestClient]:
    asyncio.run(_seed(redis_server.url))
    with api_client(redis_server.url, kafka_server.bootstrap_servers, PREFIX) as c:
        yield c


async def _consume(
    bootstrap: str, topics: list[str], wanted: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Records of the topics, read until every wanted event was seen (or 15 s)."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    records: list[dict[str, Any]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while loop.time() < deadline:
            if all(any(_same(w, r) for r in records) for w in wanted):
                break
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records += [orjson.loads(m.value) for m in messages]
        return records
    finally:
        await consumer.stop()


def _on_kafka(bootstrap: str, wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = TopicNames(PREFIX)
    topics = [names.catalog, names.registration_events]
    return asyncio.run(_consume(bootstrap, topics, wanted))


def _same(expected: Any, actual: Any) -> bool:
    """``expected`` is a subset of ``actual``; timestamps compare as instants."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _same(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(_same(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, str) and isinstance(actual, str) and expected != actual:
        try:
            return datetime.fromisoformat(expected) == datetime.fromisoformat(actual)
        except ValueError:
            return False
    return bool(expected == actual)


_BLOCK = re.compile(r"^```json ([^\n]*)\n(.*?)^```", re.M | re.S)


def _examples() -> list[dict[str, Any]]:
    """Requests of the doc, each with its expected response and events."""
    examples: list[dict[str, Any]] = []
    for info, body in _BLOCK.findall(DOC.read_text()):
        words = info.split()
        if words[0] in {"POST", "PUT"}:
            examples.append(
                {"method": words[0], "path": words[1], "body": orjson.loads(body)}
            )
        elif words[0] == "response":
            examples[-1]["status"] = int(words[1])
            examples[-1]["response"] = orjson.loads(body)
        elif words[0] == "event":
            examples[-1].setdefault("events", []).append(orjson.loads(body))
    return examples


def test_the_documented_examples_run_as_documented(
    client: TestClient, kafka_server: EmbeddedKafka
) -> None:
    examples = _examples()
    assert len(examples) >= 9
    expected_events = []
    for ex in examples:
        r = client.request(ex["method"], ex["path"], json=ex["body"], headers=ADMIN)
        assert r.status_code == ex["status"], (ex["path"], r.text)
        assert _same(ex["response"], r.json()), (ex["path"], r.json())
        expected_events += ex.get("events", [])
    # The response came after the broker's ack: the events are there already.
    on_kafka = _on_kafka(kafka_server.bootstrap_servers, expected_events)
    for event in expected_events:
        assert any(_same(event, e) for e in on_kafka), event
    for e in on_kafka:
        assert e["event_id"] and e["occurred_at"]


def test_every_documented_mapping_appears_in_an_example() -> None:
    text = DOC.read_text()
    for needle in ("GradeEvent", "AssessmentItemEvent", "result.success", "scaled"):
        assert needle in text
    paths = {ex["path"].split("/")[1] for ex in _examples()}
    assert paths >= {
        "learning-instances",
        "registrations",
        "goals",
        "modules",
        "batch-events",
        "xapi",
        "caliper",
    }


def _attempt(i: int) -> dict[str, object]:
    return {
        "registration_id": "reg-0001",
        "module_id": "m-1",
        "is_correct": i % 2 == 0,
        "interaction_end_time": "2026-09-02T10:00:00Z",
        "attempt_id": f"bulk-{i}",
    }


def test_500_events_fit_and_501_are_a_413(client: TestClient) -> None:
    r = client.post(
        "/batch-events",
        json={"events": [_attempt(i) for i in range(500)]},
        headers=ADMIN,
    )
    assert r.status_code == 207
    assert r.json()["accepted"] == 500
    for path, body in [
        ("/batch-events", {"events": [_attempt(i) for i in range(501)]}),
        ("/xapi/statements", [{}] * 501),
        (
            "/caliper/events",
            {
                "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p2",
                "data": [{}] * 501,
            },
        ),
    ]:
        r = client.post(path, json=body, headers=ADMIN)
        assert r.status_code == 413, path
        err = r.json()["error"]
        assert err["code"] == "too_many_events"
        assert "at most 500 events" in err["message"]
        assert err["details"] == {"limit": 500, "count": 501}


def test_other_partners_learning_instance_is_404_and_bad_bodies_400(
    client: TestClient,
) -> None:
    r = client.post(
        "/registrations",
        json={"learning_instance_id": "li-p2", "user_id": "u", "role": "learner"},
        headers=ADMIN,
    )
    assert r.status_code == 404
    r = client.put(
        "/goals/goal-new",
        json={
            "learning_instance_id": "li-algebra-1",
            "targets": [{"module_id": "m"}, {"learning_objective_id": "lo"}],
        },
        headers=ADMIN,
    )
    assert r.status_code == 400
    assert "targets" in r.text
    r = client.post("/batch-events", json=[_attempt(1)], headers=ADMIN)
    assert r.status_code == 400
    r = client.post(
        "/caliper/events", json={"data": [], "dataVersion": "v1p1"}, headers=ADMIN
    )
    assert r.status_code == 400
    assert r.json()["error"]["details"] == {"field": "dataVersion"}


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("prior", 1.0, "less than or equal to 0.9999"),
        ("learn", 0.0, "greater than or equal to 0.0001"),
        ("guess", 0.5, "less than or equal to 0.4999"),
        ("slip", 1e-40, "greater than or equal to 0.0001"),
    ],
)
def test_out_of_range_bkt_parameters_are_a_400_naming_the_field(
    client: TestClient, name: str, value: float, words: str
) -> None:
    good = {"prior": 0.2, "learn": 0.15, "guess": 0.2, "slip": 0.1}
    r = client.put(
        "/modules/m-range",
        json={
            "learning_objective_ids": ["lo-r"],
            "parameters": {"lo-r": {**good, name: value}},
        },
        headers=ADMIN,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    field = f"parameters.lo-r.{name}"
    assert error["message"] == f"invalid request body: {field}"
    assert error["details"] == [{"field": field, "message": f"Input should be {words}"}]


def test_a_broker_outage_is_a_503_with_retry_after_never_a_2xx(
    redis_server: EmbeddedRedis,
) -> None:
    asyncio.run(_seed(redis_server.url))
    dead = f"127.0.0.1:{free_port()}"
    with api_client(redis_server.url, None, PREFIX) as no_broker:
        r = no_broker.post("/learning-instances", json={}, headers=ADMIN)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "ingest_unavailable"
    from api.sink import KafkaEventSink  # the real client against a dead port
    from infra.broker import KAFKA

    sink = KafkaEventSink(dead, KAFKA, TopicNames(PREFIX), ack_timeout_s=2.0)

    async def send() -> None:
        from schemas.events import LearningInstanceCreated as LI

        await sink.send(
            [LI(event_id="x", occurred_at=T0, learning_instance_id="l", partner_id="p")]
        )

    from api.errors import BrokerUnavailable

    with pytest.raises(BrokerUnavailable) as info:
        asyncio.run(send())
    assert info.value.status_code == 503
    assert info.value.headers["Retry-After"] == "5"
    assert info.value.details["stored"] == []


def test_broker_down_through_the_api(
    redis_server: EmbeddedRedis, kafka_server: EmbeddedKafka
) -> None:
    """A broker that stops mid-life: 503 + Retry-After for every ingest route."""
    own = EmbeddedKafka().start()
    try:
        with api_client(
            redis_server.url, own.bootstrap_servers, PREFIX, ack_timeout_s=1.5
        ) as c:
            asyncio.run(_seed(redis_server.url))
            ok = c.post("/learning-instances", json={}, headers=ADMIN)
            assert ok.status_code == 202
            own.stop()
            for method, path, body in [
                ("POST", "/learning-instances", {}),
                ("PUT", "/modules/m-1", {"learning_objective_ids": ["lo"]}),
                ("POST", "/batch-events", {"events": [_attempt(7)]}),
                (
                    "POST",
                    "/registrations/reg-0001/graded-events",
                    {k: v for k, v in _attempt(8).items() if k != "registration_id"},
                ),
            ]:
                r = c.request(method, path, json=body, headers=ADMIN)
                assert r.status_code == 503, (path, r.text)
                assert r.headers["retry-after"] == "7"
                assert r.json()["error"]["code"] == "broker_unavailable"
    finally:
        own.stop()
