"""Starlette app factory: the two status-and-progress endpoints of the contract.

Pages are assembled from the stored JSON bytes of each row: the response is
concatenated, never decoded and re-encoded (see docs/read-model.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import AllowAll, Authorizer
from api.errors import ApiError, BadRequest, PayloadTooLarge
from api.store import Page, PageStore, RedisPageStore
from schemas.api import LearningInstanceQuery, RegistrationQuery
from schemas.events import EntityId

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_JSON = "application/json"
M = TypeVar("M", bound=BaseModel)


def _json_response(body: bytes, status: int = 200) -> Response:
    return Response(content=body, status_code=status, media_type=_JSON)


def _error_response(exc: ApiError) -> Response:
    return _json_response(orjson.dumps(exc.body()), exc.status_code)


async def _read_json(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(
            f"request body over {limit} bytes", details={"limit": limit}
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(
                f"request body over {limit} bytes", details={"limit": limit}
            )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"request body is not valid JSON: {exc}", details={"field": "body"}
        ) from exc


def _validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise BadRequest(
            "request body must be a JSON object", details={"field": "body"}
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(str(p) for p in err["loc"]) or "body",
                "message": err["msg"],
            }
            for err in exc.errors(include_url=False)
        ]
        fields = ", ".join(sorted({e["field"] for e in errors}))
        raise BadRequest(f"invalid request body: {fields}", details=errors) from exc


_ENTITY_ID: TypeAdapter[str] = TypeAdapter(EntityId)


def _path_id(request: Request, name: str) -> str:
    value = str(request.path_params[name])
    try:
        return str(_ENTITY_ID.validate_python(value))
    except ValidationError as exc:
        raise BadRequest(f"{name} is not a valid id", details={"field": name}) from exc


def _render(
    query: Any, goal_ids: Sequence[str], page: Page, next_: dict[str, int] | None
) -> bytes:
    parts = [
        b'{"query":',
        orjson.dumps(query),
        b',"column_headers":',
        orjson.dumps(list(goal_ids)),
        b',"data":[',
    ]
    for i, (reg_id, items) in enumerate(
        zip(page.registration_ids, page.rows, strict=True)
    ):
        if i:
            parts.append(b",")
        parts += [
            b'{"registration_id":',
            orjson.dumps(reg_id),
            b',"status_and_progress":[',
            b",".join(items),
            b"]}",
        ]
    parts.append(b"]")
    if next_ is not None:
        parts += [b',"next":', orjson.dumps(next_)]
    parts.append(b"}")
    return b"".join(parts)


def create_app(
    store: PageStore,
    *,
    authorizer: Authorizer | None = None,
    max_request_bytes: int = 65_536,
    on_shutdown: Sequence[Any] = (),
) -> Starlette:
    """Build the API over a page store (Redis in production, anything in tests)."""
    auth = authorizer or AllowAll()

    async def learning_instance_status(request: Request) -> Response:
        li_id = _path_id(request, "li_id")
        raw = await _read_json(request, max_request_bytes)
        query = _validate(LearningInstanceQuery, raw)
        await auth.authorize(request, "read_learning_instance", li_id)
        page = await store.learning_instance_page(
            li_id,
            query.goal_ids,
            query.registration_offset,
            query.registrations_per_page,
        )
        end = query.registration_offset + len(page.registration_ids)
        next_ = (
            {
                "registration_offset": end,
                "registrations_per_page": query.registrations_per_page,
            }
            if end < page.total
            else None
        )
        return _json_response(_render(raw, query.goal_ids, page, next_))

    async def registration_status(request: Request) -> Response:
        reg_id = _path_id(request, "reg_id")
        raw = await _read_json(request, max_request_bytes)
        query = _validate(RegistrationQuery, raw)
        await auth.authorize(request, "read_registration", reg_id)
        page = await store.registration_page(reg_id, query.goal_ids)
        return _json_response(_render(raw, query.goal_ids, page, None))

    async def health(request: Request) -> Response:
        return _json_response(b'{"status":"ok"}')

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        err = ApiError(str(exc.detail), code=code)
        return _json_response(orjson.dumps(err.body()), exc.status_code)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error_response(ApiError("internal error"))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for close in on_shutdown:
            await close()

    return Starlette(
        routes=[
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
            Route("/healthz", health, methods=["GET"]),
        ],
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
        lifespan=lifespan,
    )


def create_redis_app(redis_url: str, *, max_request_bytes: int = 65_536) -> Starlette:
    """The production app: pages from the Redis read model."""
    redis = Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    return create_app(
        RedisPageStore(redis),
        max_request_bytes=max_request_bytes,
        on_shutdown=[redis.aclose],
    )
