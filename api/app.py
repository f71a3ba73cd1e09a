"""Starlette app factory: the status-and-progress endpoints of the contract, the
ingest and admin endpoints (api/ingest.py), the OpenAPI document and its
interactive docs (api/docs.py), liveness/readiness (api/health.py) and
Prometheus metrics (api/metrics.py).

Pages are assembled from the stored JSON bytes of each row: the response is
concatenated, never decoded and re-encoded (see docs/read-model.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api._http import (
    ParsedQueries,
    error_response,
    json_response,
    path_entity_id,
    read_body,
    validation_details,
)
from api.auth import (
    Authenticator,
    authenticator_from_settings,
    authorize_learning_instance,
    authorize_registration,
)
from api.broker_loss import BrokerLossStatus, LossGuardedSink, broker_loss_checks
from api.change_hub import ChangeHub
from api.dashboard import DashboardRoutes, LearningInstanceView, RedisViewStore
from api.docs import docs_routes
from api.errors import ApiError, BadRequest, Unauthorized
from api.etag import held_version, page_response, request_basis
from api.facts import FactStore, RedisFactStore
from api.health import BrokerProbe, Readiness, redis_checks
from api.ingest import IngestRoutes
from api.metrics import (
    CONTENT_TYPE,
    ApiMetrics,
    MetricsMiddleware,
    TimedFactStore,
    TimedPageStore,
)
from api.openapi import openapi_document
from api.render import (
    render_page,
    require_a_learner,
    require_known_goals,
    require_within_bytes,
)
from api.request_id import RequestIdMiddleware, request_id
from api.shares import PartnerShare
from api.sink import EventSink, KafkaEventSink
from api.store import PageStore, RedisPageStore
from api.stream import StreamConfig, StreamRoutes
from api.tokens import Principal
from api.webhooks import WebhookRoutes, WebhookStore
from infra.broker import profile_for
from infra.kafka_security import kafka_client_kwargs
from infra.redis_client import redis_client
from infra.settings import Settings, default
from infra.topic_names import TopicNames
from infra.webhook_store import RedisWebhookStore
from schemas.api import HistoryQuery, LearningInstanceQuery, RegistrationQuery
from schemas.limits import MAX_PAGE_BYTES

__all__ = ["create_api", "create_app"]

log = logging.getLogger(__name__)


def _history_query(request: Request) -> HistoryQuery:
    """The history endpoint's query; 400 naming the first bad parameter."""
    params = request.query_params
    if len(params.getlist("goal_id")) > 1:
        raise BadRequest(
            "give goal_id once (a timeline is of one goal)",
            details={"field": "goal_id"},
        )
    try:
        return HistoryQuery.model_validate(dict(params))
    except ValidationError as exc:
        errors = validation_details(exc)
        raise BadRequest(
            "invalid query: " + ", ".join(sorted({e["field"] for e in errors})),
            details={"field": errors[0]["field"], "errors": errors},
        ) from exc


def create_app(
    store: PageStore,
    *,
    authenticator: Authenticator,
    facts: FactStore | None = None,
    sink: EventSink | None = None,
    max_request_bytes: int = default("max_request_bytes"),
    max_ingest_request_bytes: int = default("max_ingest_request_bytes"),
    correct_min_score: float = default("ingest_correct_min_score"),
    ingest_max_inflight_per_partner: int = default("ingest_max_inflight_per_partner"),
    read_max_inflight_per_partner: int = default("read_max_inflight_per_partner"),
    on_shutdown: Sequence[Any] = (),
    metrics: ApiMetrics | None = None,
    readiness: Readiness | None = None,
    hub: ChangeHub | None = None,
    stream_config: StreamConfig | None = None,
    views: LearningInstanceView | None = None,
    webhooks: WebhookStore | None = None,
    allow_private_webhook_urls: bool = False,
) -> Starlette:
    """Build the API over its ports: the page store (reads), the fact store and
    the event sink (ingest; answered with 503 when absent), the webhook
    subscriptions (503 when absent). ``readiness``
    holds the checks of ``/readyz`` (none: always ready)."""
    authn = authenticator
    openapi = orjson.dumps(openapi_document())
    metrics = metrics or ApiMetrics()
    ready = readiness or Readiness()
    # The live streams read pages straight from Redis (their own round trips).
    stream_pages = store if isinstance(store, RedisPageStore) else None
    store = TimedPageStore(store, metrics)
    if facts is not None:
        facts = TimedFactStore(facts, metrics)

    # Each partner's share of the reads in progress (each holds one of the
    # Redis client's connections): docs/operations.md, "Shared pools".
    reads = PartnerShare(read_max_inflight_per_partner, "status-and-progress reads")
    li_queries = ParsedQueries(LearningInstanceQuery)
    reg_queries = ParsedQueries(RegistrationQuery)

    def shared(
        handler: Callable[[Request, Principal], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            principal = authn.authenticate(request)
            release = reads.acquire(principal.partner_id)
            try:
                return await handler(request, principal)
            finally:
                release()

        return run

    @shared
    async def learning_instance_status(
        request: Request, principal: Principal
    ) -> Response:
        li_id = path_entity_id(request, "li_id")
        body = await read_body(request, max_request_bytes)
        query, query_json = li_queries.parse(body)
        basis = request_basis(request.scope["path"], query_json)
        page = await store.learning_instance_page(
            li_id,
            query.goal_ids,
            query.registration_offset,
            query.registrations_per_page,
            caller="" if principal.unrestricted else principal.sub,
            if_version=held_version(request.headers.get("if-none-match"), basis),
        )
        authorize_learning_instance(principal, page.access, li_id)
        require_known_goals(page)
        if page.not_modified:
            return page_response(page.version, basis, None)
        require_within_bytes(
            page,
            MAX_PAGE_BYTES,
            "registrations_per_page",
            "ask for fewer registrations_per_page or goal_ids",
        )
        end = query.registration_offset + page.count
        next_ = (
            {
                "registration_offset": end,
                "registrations_per_page": query.registrations_per_page,
            }
            if end < page.total
            else None
        )
        return page_response(
            page.version, basis, render_page(query_json, query.goal_ids, page, next_)
        )

    @shared
    async def registration_status(request: Request, principal: Principal) -> Response:
        reg_id = path_entity_id(request, "reg_id")
        body = await read_body(request, max_request_bytes)
        query, query_json = reg_queries.parse(body)
        basis = request_basis(request.scope["path"], query_json)
        page = await store.registration_page(
            reg_id,
            query.goal_ids,
            caller="" if principal.unrestricted else principal.sub,
            if_version=held_version(request.headers.get("if-none-match"), basis),
        )
        authorize_registration(principal, page.access, reg_id)
        require_known_goals(page)
        require_a_learner(page, reg_id)
        if page.not_modified:
            return page_response(page.version, basis, None)
        require_within_bytes(page, MAX_PAGE_BYTES, "goal_ids", "ask for fewer goal_ids")
        return page_response(
            page.version, basis, render_page(query_json, query.goal_ids, page, None)
        )

    @shared
    async def registration_history(request: Request, principal: Principal) -> Response:
        """The registration's timeline on one goal, paged (docs/read-model.md,
        "History"); the registration endpoint's access rules."""
        reg_id = path_entity_id(request, "reg_id")
        query = _history_query(request)
        page = await store.registration_page(
            reg_id,
            [query.goal_id],
            caller="" if principal.unrestricted else principal.sub,
        )
        authorize_registration(principal, page.access, reg_id)
        require_known_goals(page)
        require_a_learner(page, reg_id)
        stored = await store.history(reg_id, query.goal_id)
        points = orjson.loads(stored) if stored else []
        end = query.point_offset + query.points_per_page
        body: dict[str, Any] = {
            "registration_id": reg_id,
            "goal_id": query.goal_id,
            "total": len(points),
            "points": points[query.point_offset : end],
        }
        if end < len(points):
            body["next"] = {
                "point_offset": end,
                "points_per_page": query.points_per_page,
            }
        return json_response(orjson.dumps(body))

    async def health(request: Request) -> Response:
        # Liveness only: dependencies are /readyz's business.
        return json_response(b'{"status":"ok"}')

    async def readyz(request: Request) -> Response:
        return json_response(orjson.dumps(await ready.report()))

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def openapi_json(request: Request) -> Response:
        return json_response(openapi)

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if isinstance(exc, Unauthorized):
            metrics.auth_failures.labels(exc.reason).inc()
        if exc.status_code < 500:
            return error_response(exc)
        # The body says what failed; the log says where (addresses), under
        # the request id that the body carries.
        rid = request_id(request)
        cause = exc.__cause__
        log.warning(
            "request %s: %s %s answered %d %s: %s%s",
            rid,
            request.method,
            request.url.path,
            exc.status_code,
            exc.code,
            exc.message,
            f" ({type(cause).__name__}: {cause})" if cause is not None else "",
            extra={"request_id": rid},
        )
        return error_response(exc, request_id=rid)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return error_response(ApiError(str(exc.detail), code=code), exc.status_code)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        rid = request_id(request)
        log.exception(
            "request %s: unhandled error on %s %s",
            rid,
            request.method,
            request.url.path,
        )
        return error_response(ApiError("internal error"), request_id=rid)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if stream_pages is not None:
            await stream_pages.aclose()  # the page reads' own connections
        for close in on_shutdown:
            await close()

    ingest = IngestRoutes(
        authn,
        facts,
        sink,
        max_request_bytes=max_ingest_request_bytes,
        correct_min_score=correct_min_score,
        max_inflight_per_partner=ingest_max_inflight_per_partner,
    )
    routes: list[BaseRoute] = [
        Route(
            "/learning-instances/{li_id}/metrics/status-and-progress",
            learning_instance_status,
            methods=["POST"],
        ),
        Route(
            "/registrations/{reg_id}/metrics/status-and-progress",
            registration_status,
            methods=["POST"],
        ),
        Route(
            "/registrations/{reg_id}/metrics/status-and-progress/history",
            registration_history,
            methods=["GET"],
        ),
        *ingest.routes(),
        *StreamRoutes(
            authn,
            stream_pages,
            hub,
            stream_config or StreamConfig(),
        ).routes(),
        *DashboardRoutes(authn, views).routes(),
        *WebhookRoutes(
            authn,
            webhooks,
            allow_private_urls=allow_private_webhook_urls,
            max_request_bytes=max_request_bytes,
        ).routes(),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        *docs_routes(),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(MetricsMiddleware, metrics=metrics, routes=routes),
        ],
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
        lifespan=lifespan,
    )


def create_api(settings: Settings) -> Starlette:
    """The production app: pages from Redis, events to Kafka, auth from settings.

    Raises :class:`api.tokens.AuthConfigError` (refusing to start) when
    authentication is on without a key, and ``ValueError`` without ``REDIS_URL``.
    """
    if settings.redis_url is None:
        raise ValueError("REDIS_URL is not set")
    authenticator = authenticator_from_settings(settings)
    url, cluster = settings.redis_url, settings.redis_cluster
    redis = redis_client(
        url, cluster=cluster, socket_timeout=2.0, socket_connect_timeout=2.0
    )
    # Live streams block on XREAD: their own client, without the 2 s timeout.
    hub = ChangeHub(
        redis_client(
            url, cluster=cluster, socket_timeout=30.0, socket_connect_timeout=2.0
        ),
        queue_size=settings.stream_queue_events,
    )
    # Page reads: their own client, bounded per read rather than per socket
    # operation (api/store.py, RedisPageStore).
    pages = redis_client(
        url, cluster=cluster, socket_timeout=None, socket_connect_timeout=2.0
    )
    closers: list[Any] = [hub.close, redis.aclose, pages.aclose]
    metrics = ApiMetrics()
    checks, depends = redis_checks(redis, metrics)
    sink: EventSink | None = None
    if settings.kafka_bootstrap_servers is not None:
        security = kafka_client_kwargs(settings)
        kafka = KafkaEventSink(
            settings.kafka_bootstrap_servers,
            profile_for(settings),
            TopicNames(settings.topic_prefix),
            ack_timeout_s=settings.ingest_ack_timeout_s,
            retry_after_s=settings.ingest_retry_after_s,
            client_kwargs=security,
        )
        probe = BrokerProbe(settings.kafka_bootstrap_servers, client_kwargs=security)
        checks["broker"] = probe
        closers[:0] = [kafka.stop, probe.close]
        # Every ingest path writes through this sink (api/broker_loss.py).
        loss = BrokerLossStatus(redis)
        sink = LossGuardedSink(kafka, loss, retry_after_s=settings.ingest_retry_after_s)
        more, needs = broker_loss_checks(redis, loss, settings.worker_heartbeat_ttl_s)
        checks |= more
        depends |= needs
    return create_app(
        RedisPageStore(pages, timeout_s=2.0),
        authenticator=authenticator,
        facts=RedisFactStore(redis),
        sink=sink,
        max_request_bytes=settings.max_request_bytes,
        max_ingest_request_bytes=settings.max_ingest_request_bytes,
        correct_min_score=settings.ingest_correct_min_score,
        ingest_max_inflight_per_partner=settings.ingest_max_inflight_per_partner,
        read_max_inflight_per_partner=settings.read_max_inflight_per_partner,
        on_shutdown=closers,
        metrics=metrics,
        readiness=Readiness(checks, depends),
        hub=hub,
        stream_config=StreamConfig.from_settings(settings),
        views=RedisViewStore(redis),
        webhooks=RedisWebhookStore(redis),
        allow_private_webhook_urls=settings.webhooks_allow_private_urls,
    )
