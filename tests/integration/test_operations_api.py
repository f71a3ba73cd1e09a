"""The API's operational endpoints over the real Redis and broker:
``/metrics`` counts what was sent, ``/readyz`` names the failing dependency,
``/healthz`` stays up, ``/docs`` works without any other host.

The production factory ``create_api(settings)`` is used where it matters (it
wires the readiness checks and the broker probe).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from starlette.testclient import TestClient

from api.app import create_api
from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from infra.read_model import ReadModelKeys
from infra.settings import Settings
from tests.integration.auth_world import SETTINGS, api_client, bearer, seed_world

pytestmark = pytest.mark.integration

ADMIN = bearer("ops-admin", "p1", ("partner_admin",))
LI_ROUTE = "/learning-instances/{li_id}/metrics/status-and-progress"
BODY = {"goal_ids": ["goal-a"]}
MARKER = ReadModelKeys().materialized()
HEARTBEAT = ReadModelKeys().worker_heartbeat()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    **labels: str,
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def seeded(redis_server: EmbeddedRedis) -> Iterator[EmbeddedRedis]:
    seed_world(redis_server.url)
    Redis.from_url(redis_server.url).set(MARKER, b'{"by":"test"}')
    # A worker runs (its heartbeat, app/worker/heartbeat.py).
    Redis.from_url(redis_server.url).set(HEARTBEAT, b'{"by":"test"}')
    yield redis_server


def test_metrics_count_what_was_sent(seeded: EmbeddedRedis) -> None:
    expired = bearer("ops-admin", "p1", ("partner_admin",), ttl_s=-3600)
    sent = {"ok": 7, "unknown": 3, "missing": 4, "expired": 2, "malformed": 5}
    with api_client(seeded.url, None, "ops-metrics") as client:
        for _ in range(sent["ok"]):
            r = client.post(LI_ROUTE.format(li_id="li-a"), json=BODY, headers=ADMIN)
            assert r.status_code == 200
        for i in range(sent["unknown"]):
            r = client.post(
                LI_ROUTE.format(li_id=f"nope-{i}"), json=BODY, headers=ADMIN
            )
            assert r.status_code == 404
        for _ in range(sent["missing"]):
            r = client.post(LI_ROUTE.format(li_id="li-a"), json=BODY)
            assert r.status_code == 401
        for _ in range(sent["expired"]):
            r = client.post(LI_ROUTE.format(li_id="li-a"), json=BODY, headers=expired)
            assert r.status_code == 401
        for _ in range(sent["malformed"]):
            r = client.post(
                LI_ROUTE.format(li_id="li-a"),
                json=BODY,
                headers={"authorization": "Bearer not-a-jwt"},
            )
            assert r.status_code == 401
        assert client.get("/healthz").status_code == 200
        assert client.get("/no/such/path").status_code == 404
        scrape = client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    s = _samples(scrape.text)

    def requests(status: str, route: str = LI_ROUTE, method: str = "POST") -> float:
        return _value(
            s, "mastery_api_requests_total", route=route, method=method, status=status
        )

    assert requests("200") == sent["ok"]
    assert requests("404") == sent["unknown"]
    assert requests("401") == sent["missing"] + sent["expired"] + sent["malformed"]
    assert requests("200", "/healthz", "GET") == 1
    # Unknown paths share one label value: ids never become label values.
    assert requests("404", "unmatched", "GET") == 1
    assert not any("nope-" in name for name, labels in s for _, name in labels)
    # The latency histogram saw the same requests.
    latency = "mastery_api_request_seconds_count"
    assert _value(s, latency, route=LI_ROUTE, method="POST", status="200") == sent["ok"]
    assert (
        _value(
            s,
            "mastery_api_request_seconds_bucket",
            route=LI_ROUTE,
            method="POST",
            status="200",
            le="+Inf",
        )
        == sent["ok"]
    )
    # 401s by reason.
    auth = "mastery_api_auth_failures_total"
    assert _value(s, auth, reason="missing") == sent["missing"]
    assert _value(s, auth, reason="expired") == sent["expired"]
    assert _value(s, auth, reason="malformed") == sent["malformed"]
    # Redis round trips: one page script per authenticated read, none for 401s.
    redis_count = "mastery_api_redis_seconds_count"
    assert (
        _value(s, redis_count, operation="learning_instance_page")
        == sent["ok"] + sent["unknown"]
    )
    assert (
        _value(s, "mastery_api_redis_seconds_sum", operation="learning_instance_page")
        > 0
    )


def _settings(redis_url: str, bootstrap: str | None, **kw: object) -> Settings:
    return Settings(
        redis_url=redis_url,
        kafka_bootstrap_servers=bootstrap,
        broker_profile="kafka",
        topic_prefix="ops-ready",
        jwt_hs256_secret=SETTINGS.jwt_hs256_secret,
        **kw,  # type: ignore[arg-type]
    )


def test_ready_when_redis_read_model_and_broker_are(
    seeded: EmbeddedRedis, kafka_server: EmbeddedKafka
) -> None:
    app = create_api(_settings(seeded.url, kafka_server.bootstrap_servers))
    with TestClient(app) as client:
        r = client.get("/readyz")
        scrape = client.get("/metrics").text
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "checks": {
            "redis": "ok",
            "read_model": "ok",
            "broker": "ok",
            "broker_log": "ok",
            "worker": "ok",
        },
    }
    assert (
        _value(_samples(scrape), "mastery_api_redis_seconds_count", operation="ping")
        == 1
    )


def test_not_ready_without_the_read_model(redis_server: EmbeddedRedis) -> None:
    seed_world(redis_server.url)
    Redis.from_url(redis_server.url).delete(MARKER)
    with TestClient(create_api(_settings(redis_server.url, None))) as client:
        r = client.get("/readyz")
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "not_ready"
    assert error["details"]["failing"] == ["read_model"]
    assert "mastery rebuild" in error["details"]["checks"]["read_model"]
    assert r.headers["retry-after"] == "5"


def test_redis_down_is_named_and_liveness_stays_up() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with TestClient(create_api(_settings(dead, None))) as client:
        ready = client.get("/readyz")
        alive = client.get("/healthz")
    assert alive.status_code == 200
    assert ready.status_code == 503
    details = ready.json()["error"]["details"]
    assert details["failing"] == ["redis"]
    assert details["checks"]["read_model"] == "not checked: redis failed"
    assert "redis" in ready.json()["error"]["message"]


def test_broker_down_is_named(seeded: EmbeddedRedis) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with TestClient(create_api(_settings(seeded.url, dead))) as client:
        r = client.get("/readyz")
    assert r.status_code == 503
    details = r.json()["error"]["details"]
    assert details["failing"] == ["broker"]
    assert details["checks"]["redis"] == "ok"


def test_docs_page_loads_only_from_this_server(seeded: EmbeddedRedis) -> None:
    with api_client(seeded.url, None, "ops-docs") as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert len(refs) == 2
        assert not re.search(r"https?://", html)
        assert 'url: "/openapi.json"' in html
        assert "validatorUrl: null" in html
        for ref in refs:
            asset = client.get(ref)
            assert asset.status_code == 200, ref
            assert len(asset.content) > 10_000, ref
        bundle = client.get("/docs/assets/swagger-ui-bundle.js")
        assert "javascript" in bundle.headers["content-type"]
        # Swagger UI 5 or later: older versions refuse OpenAPI 3.1 documents.
        assert client.get("/openapi.json").json()["openapi"] == "3.1.0"
        assert re.search(r'"5\.\d+\.\d+"', bundle.text)
        assert client.get("/docs/assets/no-such-file.js").status_code == 404
