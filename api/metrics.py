"""The API's Prometheus metrics, served at ``GET /metrics``.

``mastery_api_requests_total{route,method,status}``
    requests answered, by route *template* (``/registrations/{reg_id}/...``,
    never the id: bounded label values), method (unknown ones as ``other``)
    and status code
``mastery_api_request_seconds{route,method,status}``
    their latency (histogram)
``mastery_api_auth_failures_total{reason}``
    401s by reason (``missing``, ``malformed_header``, ``malformed``,
    ``algorithm``, ``expired``, ``bad_signature``, ``missing_claim``,
    ``bad_claims``, ``invalid``)
``mastery_api_redis_seconds{operation}``
    Redis round trips (page reads, fact reads, readiness PING), failed ones
    included

plus the standard ``process_*`` metrics (CPU, memory, open files) of the
process. Each app has its own registry, so several apps in one process (tests)
never share counts. Under ``mastery api --workers N`` the counts are kept in
files shared by the N processes and ``/metrics`` adds them up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.facts import FactStore, GoalFacts, RegistrationFacts
from api.store import Page, PageStore

__all__ = [
    "CONTENT_TYPE",
    "ApiMetrics",
    "MetricsMiddleware",
    "TimedFactStore",
    "TimedPageStore",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Requests are ~1 ms when warm; the tail is what matters.
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_UNMATCHED = "unmatched"
#: Methods are client-chosen strings: others share one label value.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
T = TypeVar("T")


class ApiMetrics:
    """The API's collectors, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        labels = ("route", "method", "status")
        self.requests = Counter(
            "mastery_api_requests_total",
            "HTTP requests answered, by route template, method and status",
            labels,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "mastery_api_request_seconds",
            "HTTP request latency, by route template, method and status",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "mastery_api_auth_failures_total",
            "requests refused with 401, by reason",
            ("reason",),
            registry=self.registry,
        )
        self.redis_seconds = Histogram(
            "mastery_api_redis_seconds",
            "Redis round-trip latency, by operation",
            ("operation",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._redis_children: dict[str, Any] = {}

    def render(self) -> bytes:
        """The exposition text of every collector; under ``mastery api
        --workers N`` (app/cli/api_processes.py) the requests, latencies, auth
        failures and Redis round trips are the sums over all N processes."""
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not folder:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
        ProcessCollector(registry=registry)
        return generate_latest(registry)

    async def timed_redis(self, operation: str, call: Awaitable[T]) -> T:
        """Await ``call`` and observe its duration (also when it fails)."""
        start = time.perf_counter()
        try:
            return await call
        finally:
            child = self._redis_children.get(operation)
            if child is None:
                child = self._redis_children[operation] = self.redis_seconds.labels(
                    operation
                )
            child.observe(time.perf_counter() - start)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template.

    Pure ASGI (no BaseHTTPMiddleware): the status is read from the response
    start message; an exception that escapes the app counts as a 500.
    """

    def __init__(
        self, app: ASGIApp, *, metrics: ApiMetrics, routes: Sequence[BaseRoute]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        # The labelled children, by their labels (a bounded set: route
        # templates x methods x statuses): prometheus_client's labels()
        # converts and looks them up under a lock on every call.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = self._template(scope)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            key = (route, method, status)
            children = self._children.get(key)
            if children is None:
                labels = (route, method, str(status))
                children = (
                    self.metrics.requests.labels(*labels),
                    self.metrics.request_seconds.labels(*labels),
                )
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - start)

    def _template(self, scope: Scope) -> str:
        route: Any = scope.get("route")
        if route is None:
            # The router did not record it (no match, or an older Starlette).
            for candidate in self.routes:
                match, _ = candidate.matches(scope)
                if match is not Match.NONE:
                    route = candidate
                    break
        path = getattr(route, "path", None)
        return path if isinstance(path, str) else _UNMATCHED


class TimedPageStore:
    """:class:`PageStore` that observes each read's Redis round trip."""

    def __init__(self, store: PageStore, metrics: ApiMetrics) -> None:
        self._store = store
        self._metrics = metrics

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
        return await self._metrics.timed_redis(
            "learning_instance_page",
            self._store.learning_instance_page(
                li_id, goal_ids, offset, limit, caller=caller, if_version=if_version
            ),
        )

    async def registration_page(
        self,
        registration_id: str,
        goal_ids: Sequence[str],
        *,
        caller: str = "",
        if_version: str = "",
    ) -> Page:
        return await self._metrics.timed_redis(
            "registration_page",
            self._store.registration_page(
                registration_id, goal_ids, caller=caller, if_version=if_version
            ),
        )

    async def history(self, registration_id: str, goal_id: str) -> bytes | None:
        return await self._metrics.timed_redis(
            "history", self._store.history(registration_id, goal_id)
        )


class TimedFactStore:
    """:class:`FactStore` that observes each read's Redis round trip."""

    def __init__(self, facts: FactStore, metrics: ApiMetrics) -> None:
        self._facts = facts
        self._metrics = metrics

    def _timed(self, operation: str, call: Awaitable[T]) -> Awaitable[T]:
        return self._metrics.timed_redis(operation, call)

    async def learning_instance_partner(self, li_id: str) -> str | None:
        return await self._timed(
            "facts_partner", self._facts.learning_instance_partner(li_id)
        )

    async def registrations(
        self, registration_ids: Sequence[str]
    ) -> dict[str, RegistrationFacts]:
        return await self._timed(
            "facts_registrations", self._facts.registrations(registration_ids)
        )

    async def goals(self, goal_ids: Sequence[str]) -> dict[str, GoalFacts]:
        return await self._timed("facts_goals", self._facts.goals(goal_ids))
