"""The API while a worker reports a broker loss, and without a worker
heartbeat (api/broker_loss.py): /readyz and every ingest path answer 503;
reads go on. Real Redis and broker, the production app factory."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from redis import Redis
from starlette.testclient import TestClient

from api.app import create_api
from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis
from infra.read_model import ReadModelKeys
from infra.settings import Settings
from schemas.broker_status import BrokerLoss, LostPartition
from tests.integration.auth_world import SETTINGS, bearer, seed_world
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

KEYS = ReadModelKeys()
ADMIN = bearer("adm1", "p1", ("partner_admin",))
INGEST = bearer("svc1", "p1", ("ingest",))
LOSS = BrokerLoss(
    by="worker test (pid 1)",
    at=datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
    reason="the broker lost records this deployment had already read",
    lost=(LostPartition(topic="t.catalog.v1", partition=0, seen=10, end=0),),
)
WHEN = "2026-09-02T10:00:00Z"
ATTEMPT = {"module_id": "m1", "is_correct": True, "interaction_end_time": WHEN}
#: Every ingest route, each with a body that passes validation and access checks.
INGEST_CALLS = [
    (
        "POST",
        "/registrations",
        ADMIN,
        {"learning_instance_id": "li-a", "user_id": "n", "role": "learner"},
    ),
    ("POST", "/learning-instances", ADMIN, {"learning_instance_id": "li-new"}),
    (
        "PUT",
        "/goals/goal-new",
        ADMIN,
        {"learning_instance_id": "li-a", "targets": [{"module_id": "m1"}]},
    ),
    ("PUT", "/modules/m1", ADMIN, {"learning_objective_ids": ["lo-1"]}),
    (
        "POST",
        "/registrations/reg-a1/graded-events",
        INGEST,
        {**ATTEMPT, "attempt_id": "at-1"},
    ),
    (
        "POST",
        "/batch-events",
        INGEST,
        {"events": [{**ATTEMPT, "registration_id": "reg-a1", "attempt_id": "at-2"}]},
    ),
]


@pytest.fixture
def world(redis_server: EmbeddedRedis) -> Iterator[Redis]:
    seed_world(redis_server.url)
    redis = Redis.from_url(redis_server.url)
    redis.set(KEYS.materialized(), b'{"by":"test"}')
    redis.set(KEYS.worker_heartbeat(), b'{"by":"test"}')
    yield redis
    redis.delete(KEYS.broker_loss(), KEYS.worker_heartbeat())


@pytest.fixture
def client(world: Redis, kafka_server: EmbeddedKafka) -> Iterator[TestClient]:
    url = world.connection_pool.connection_kwargs
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{url['port']}/0",
        kafka_bootstrap_servers=kafka_server.bootstrap_servers,
        broker_profile="kafka",
        topic_prefix="loss-api",
        jwt_hs256_secret=SETTINGS.jwt_hs256_secret,
    )
    with TestClient(create_api(settings)) as c:
        yield c


def test_a_reported_loss_fails_readiness_with_its_reason(
    world: Redis, client: TestClient
) -> None:
    assert client.get("/readyz").status_code == 200
    world.set(KEYS.broker_loss(), LOSS.model_dump_json())
    r = client.get("/readyz")
    assert r.status_code == 503
    details = r.json()["error"]["details"]
    assert details["failing"] == ["broker_log"]
    reason = details["checks"]["broker_log"]
    assert "t.catalog.v1[0] ended at 10, now 0" in reason
    assert "worker test (pid 1)" in reason and "mastery broker-reset" in reason
    assert client.get("/healthz").status_code == 200  # liveness unchanged


@pytest.mark.parametrize(("method", "path", "auth", "body"), INGEST_CALLS)
def test_every_ingest_path_answers_503_while_a_loss_is_reported(
    world: Redis,
    client: TestClient,
    method: str,
    path: str,
    auth: dict[str, str],
    body: object,
) -> None:
    world.set(KEYS.broker_loss(), LOSS.model_dump_json())
    r = client.request(method, path, json=body, headers=auth)
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "broker_lost_data"
    assert error["details"]["stored"] == []
    assert error["details"]["reported_by"] == "worker test (pid 1)"
    assert r.headers["retry-after"] == "5"

    world.delete(KEYS.broker_loss())
    # The API reads the loss at most once a second: 503 until it reads again.
    r = wait_for(
        lambda: client.request(method, path, json=body, headers=auth),
        accept=lambda r: r.status_code != 503,
        timeout_s=5,
        what="the API to notice the cleared loss",
    )
    assert r.status_code in (200, 202, 207), r.text


def test_reads_go_on_while_a_loss_is_reported(world: Redis, client: TestClient) -> None:
    world.set(KEYS.broker_loss(), LOSS.model_dump_json())
    r = client.post(
        "/registrations/reg-a1/metrics/status-and-progress",
        json={"goal_ids": ["goal-a"]},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text


def test_no_worker_heartbeat_fails_readiness(world: Redis, client: TestClient) -> None:
    world.delete(KEYS.worker_heartbeat())
    r = client.get("/readyz")
    assert r.status_code == 503
    details = r.json()["error"]["details"]
    assert details["failing"] == ["worker"]
    assert "no worker heartbeat in the last 30 s" in details["checks"]["worker"]
