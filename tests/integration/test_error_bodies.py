"""Error bodies never carry the addresses of the servers behind the API: the
read model's Redis paused (SIGSTOP, so every call times out naming its
address), the real app answers 503 with a request id, and only the log,
under that id, says which server failed."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from starlette.testclient import TestClient

from api.app import create_api, create_app
from api.auth import BearerAuthenticator
from api.dashboard import RedisViewStore
from api.facts import RedisFactStore
from api.health import Readiness, redis_checks
from api.metrics import ApiMetrics
from api.store import RedisPageStore
from api.tokens import verifier_from_settings
from app.devstack.embedded import EmbeddedRedis
from tests.integration.auth_world import SETTINGS, bearer, seed_world

pytestmark = pytest.mark.integration

ADMIN = bearer("admin-1", "p1", ("partner_admin",))


@pytest.fixture
def paused_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    seed_world(server.url)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)
    try:
        yield server
    finally:
        server.proc.send_signal(signal.SIGCONT)
        server.stop()


def test_a_paused_redis_is_a_503_with_a_request_id_and_no_address(
    paused_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    redis = Redis.from_url(paused_redis.url, socket_timeout=0.5)
    metrics = ApiMetrics()
    checks, depends = redis_checks(redis, metrics)
    app = create_app(
        RedisPageStore(redis),
        authenticator=BearerAuthenticator(verifier_from_settings(SETTINGS)),
        facts=RedisFactStore(redis),
        metrics=metrics,
        readiness=Readiness(checks, depends),
        views=RedisViewStore(redis),
        on_shutdown=[redis.aclose],
    )
    address = f"127.0.0.1:{paused_redis.port}"
    caplog.set_level(logging.WARNING)
    with TestClient(app) as client:
        answers = [
            client.post(
                "/learning-instances/li-a/metrics/status-and-progress",
                json={"goal_ids": ["goal-a"]},
                headers=ADMIN,
            ),
            client.post(
                "/registrations/reg-a1/metrics/status-and-progress",
                json={"goal_ids": ["goal-a"]},
                headers=ADMIN,
            ),
            client.get("/learning-instances/li-a/goals", headers=ADMIN),
            client.get("/readyz"),
        ]
    ids = set()
    for response in answers:
        assert response.status_code == 503, response.text
        assert "127.0.0.1" not in response.text, response.text
        assert str(paused_redis.port) not in response.text, response.text
        rid = response.headers["x-request-id"]
        if response.url.path != "/readyz":
            error = response.json()["error"]
            assert error["code"] == "read_model_unavailable"
            assert error["request_id"] == rid
            # The reason still says what happened, without the address.
            assert "Timeout" in error["details"]["reason"], error
            logged = [r.getMessage() for r in caplog.records if rid in r.getMessage()]
            assert logged, f"no log line for request {rid}"
            assert any(address in line for line in logged), logged
        ids.add(rid)
    assert len(ids) == len(answers)


def test_every_response_has_a_request_id(redis_server: EmbeddedRedis) -> None:
    redis = Redis.from_url(redis_server.url)
    app = create_app(
        RedisPageStore(redis),
        authenticator=BearerAuthenticator(verifier_from_settings(SETTINGS)),
        on_shutdown=[redis.aclose],
    )
    with TestClient(app) as client:
        ok = client.get("/healthz")
        missing = client.get("/no-such-path", headers={"x-request-id": "chosen"})
    assert ok.status_code == 200 and missing.status_code == 404
    ids = [ok.headers["x-request-id"], missing.headers["x-request-id"]]
    assert "chosen" not in ids and ids[0] != ids[1]
    # A 4xx body stays as it was: byte-identical for identical requests.
    assert "request_id" not in missing.json()["error"]


def test_the_production_app_bounds_a_page_read_and_says_so(
    paused_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """create_api's page store has no socket timeout of its own (redis-py's
    cost a task per command) but bounds each read as a whole: 503 within it."""
    settings = SETTINGS.model_copy(update={"redis_url": paused_redis.url})
    caplog.set_level(logging.WARNING)
    with TestClient(create_api(settings)) as client:
        started = time.monotonic()
        response = client.post(
            "/learning-instances/li-a/metrics/status-and-progress",
            json={"goal_ids": ["goal-a"]},
            headers=ADMIN,
        )
        waited = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert 1.5 < waited < 6, waited  # the 2 s bound, not redis-py's 5 s
    error = response.json()["error"]
    assert "Timeout" in error["details"]["reason"]
    assert str(paused_redis.port) not in response.text
    logged = [
        r.getMessage() for r in caplog.records if error["request_id"] in r.getMessage()
    ]
    assert any(f"127.0.0.1:{paused_redis.port}" in line for line in logged), logged
