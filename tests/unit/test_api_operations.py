"""The API's metrics middleware and readiness logic in isolation (fake ports;
the real-Redis/broker versions are in tests/integration/test_operations_api.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from api.app import create_app
from api.auth import NoAuthentication
from api.health import CheckFailed, NotReady, Readiness
from api.metrics import ApiMetrics
from api.store import Page

ROUTE = "/registrations/{reg_id}/metrics/status-and-progress"


class ExplodingStore:
    """A page store with a bug: every read raises."""

    async def learning_instance_page(
        self,
        li_id: str,
        goal_ids: Sequence[str],
        offset: int,
        limit: int,
        *,
        caller: str = "",
        if_version: str = "",
    ) -> Page:
        raise RuntimeError("bug")

    async def registration_page(
        self,
        registration_id: str,
        goal_ids: Sequence[str],
        *,
        caller: str = "",
        if_version: str = "",
    ) -> Page:
        raise RuntimeError("bug")


def _value(metrics: ApiMetrics, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_an_unexpected_error_counts_as_500_under_its_route() -> None:
    metrics = ApiMetrics()
    app = create_app(
        ExplodingStore(), authenticator=NoAuthentication(), metrics=metrics
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        for reg in ("r-1", "r-2"):
            r = client.post(
                f"/registrations/{reg}/metrics/status-and-progress",
                json={"goal_ids": ["g"]},
            )
            assert r.status_code == 500
    labels = {"route": ROUTE, "method": "POST", "status": "500"}
    assert _value(metrics, "mastery_api_requests_total", **labels) == 2
    # The failed Redis-port call was timed too.
    assert (
        _value(
            metrics, "mastery_api_redis_seconds_count", operation="registration_page"
        )
        == 2
    )


def test_separate_apps_do_not_share_counts() -> None:
    a, b = ApiMetrics(), ApiMetrics()
    for metrics in (a, a, b):
        app = create_app(
            ExplodingStore(), authenticator=NoAuthentication(), metrics=metrics
        )
        with TestClient(app) as client:
            client.get("/healthz")
    labels = {"route": "/healthz", "method": "GET", "status": "200"}
    assert _value(a, "mastery_api_requests_total", **labels) == 2
    assert _value(b, "mastery_api_requests_total", **labels) == 1


async def test_readiness_reports_every_check() -> None:
    async def ok() -> None:
        return None

    async def down() -> None:
        raise CheckFailed("refused")

    async def hangs() -> None:
        await asyncio.sleep(10)

    ready = Readiness(
        {"a": ok, "b": down, "c": hangs, "d": ok}, {"d": "b"}, timeout_s=0.05
    )
    with pytest.raises(NotReady) as info:
        await ready.report()
    body = info.value.body()["error"]
    assert body["code"] == "not_ready"
    assert body["details"] == {
        "failing": ["b", "c"],
        "checks": {
            "a": "ok",
            "b": "refused",
            "c": "no answer within 0.05 s",
            "d": "not checked: b failed",
        },
    }
    assert info.value.status_code == 503
    assert info.value.headers["Retry-After"] == "5"


async def test_ready_when_every_check_passes() -> None:
    async def ok() -> None:
        return None

    ready = Readiness({"redis": ok, "read_model": ok}, {"read_model": "redis"})
    assert await ready.report() == {
        "status": "ready",
        "checks": {"redis": "ok", "read_model": "ok"},
    }


def test_process_metrics_come_along() -> None:
    text = ApiMetrics().render().decode()
    assert "process_resident_memory_bytes" in text
    assert "process_cpu_seconds_total" in text


def test_client_chosen_methods_do_not_create_series() -> None:
    metrics = ApiMetrics()
    app = create_app(
        ExplodingStore(), authenticator=NoAuthentication(), metrics=metrics
    )
    with TestClient(app) as client:
        for method in ("FOO", "BAR", "BAZ"):
            assert client.request(method, "/healthz").status_code == 405
    assert (
        _value(
            metrics,
            "mastery_api_requests_total",
            route="/healthz",
            method="other",
            status="405",
        )
        == 3
    )
    text = metrics.render().decode()
    assert "FOO" not in text and "BAR" not in text
