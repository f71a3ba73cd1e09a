"""Webhook subscriptions: a partner admin subscribes URLs to its status
changes, lists and deletes them, reads their recent delivery attempts and
asks for a delivery to be sent again (docs/webhooks.md).

- ``POST /webhooks``, ``GET /webhooks``, ``GET|DELETE /webhooks/{webhook_id}``
- ``GET /webhooks/{webhook_id}/deliveries``
- ``POST /webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver``

Only ``partner_admin``, within the token's partner: another partner's
subscription is answered with the same 404 as an unknown id. The server
generates the signing secret and shows it in the ``POST`` answer only. A
URL must pass :func:`infra.webhooks.check_url` (public addresses only,
unless ``MASTERY_WEBHOOKS_ALLOW_PRIVATE_URLS``). The API stores; the
notifier delivers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api._http import json_response, path_entity_id, read_json, validate
from api.auth import Authenticator, require_role
from api.errors import (
    BadRequest,
    Conflict,
    ServiceUnavailable,
    TooManyRequests,
    not_found,
    redis_unreachable,
)
from api.shares import PartnerShare
from api.tokens import Principal
from infra.webhook_store import QueueFull
from infra.webhooks import UrlRefused, check_url, new_secret
from schemas.webhooks import (
    CreateWebhook,
    DeliveryAttempt,
    DeliveryList,
    RedeliveryQueued,
    RedeliveryRequest,
    Subscription,
    WebhookCreated,
    WebhookList,
)

__all__ = ["WebhookRoutes", "WebhookStore"]

T = TypeVar("T")


class WebhookStore(Protocol):
    """The port the routes store subscriptions through
    (:class:`infra.webhook_store.RedisWebhookStore`)."""

    max_subscriptions: int

    async def create(self, subscription: Subscription) -> bool: ...

    async def subscriptions(self, partner_id: str) -> list[Subscription]: ...

    async def get(self, partner_id: str, webhook_id: str) -> Subscription | None: ...

    async def delete(self, partner_id: str, webhook_id: str) -> bool: ...

    async def deliveries(
        self, partner_id: str, webhook_id: str
    ) -> list[DeliveryAttempt]: ...

    async def request_redelivery(self, request: RedeliveryRequest) -> str | None: ...


async def _stored(call: Awaitable[T]) -> T:
    """``call``'s result; 503 when Redis cannot be reached."""
    try:
        return await call
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise redis_unreachable(exc) from exc


class WebhookRoutes:
    """The subscription endpoints over their store."""

    def __init__(
        self,
        authenticator: Authenticator,
        store: WebhookStore | None,
        *,
        allow_private_urls: bool,
        max_request_bytes: int = 65_536,
        resolve_timeout_s: float = 5.0,
        max_inflight_per_partner: int = 8,
    ) -> None:
        self.authn = authenticator
        self.store = store
        self.allow_private = allow_private_urls
        self.limit = max_request_bytes
        self.resolve_timeout_s = resolve_timeout_s
        # A URL check may wait on DNS in a thread: bound each partner's share.
        self.share = PartnerShare(max_inflight_per_partner, "webhook requests")

    def _guarded(
        self, handler: Callable[[Request, Principal, WebhookStore], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            principal = self.authn.authenticate(request)
            require_role(principal, "partner_admin")
            if self.store is None:
                raise ServiceUnavailable(
                    "webhooks are not configured on this API (no Redis)",
                    code="webhooks_unavailable",
                )
            release = self.share.acquire(principal.partner_id)
            try:
                return await handler(request, principal, self.store)
            finally:
                release()

        return run

    async def _check(self, url: str) -> None:
        try:
            await asyncio.wait_for(
                asyncio.to_thread(check_url, url, self.allow_private),
                self.resolve_timeout_s,
            )
        except UrlRefused as exc:
            raise BadRequest(
                f"url refused: {exc.reason}",
                details={"field": "url", "reason": exc.reason},
                code="url_refused",
            ) from exc
        except TimeoutError as exc:
            raise ServiceUnavailable(
                f"the url's host could not be resolved within "
                f"{self.resolve_timeout_s:g} s; retry shortly",
                details={"field": "url"},
                code="resolver_unavailable",
            ) from exc

    @staticmethod
    async def _subscription(
        store: WebhookStore, principal: Principal, request: Request
    ) -> Subscription:
        webhook_id = path_entity_id(request, "webhook_id")
        sub = await _stored(store.get(principal.partner_id, webhook_id))
        if sub is None:
            raise not_found("webhook_id", webhook_id)
        return sub

    async def create(
        self, request: Request, principal: Principal, store: WebhookStore
    ) -> Response:
        body = validate(CreateWebhook, await read_json(request, self.limit))
        await self._check(body.url)
        sub = Subscription(
            id=str(uuid.uuid4()),
            partner_id=principal.partner_id,
            url=body.url,
            event_types=body.event_types,
            created_at=datetime.now(UTC),
            created_by=principal.sub,
            secret=new_secret(),
        )
        if not await _stored(store.create(sub)):
            limit = store.max_subscriptions
            raise Conflict(
                f"this partner already has {limit} webhooks, the limit; "
                "delete one first",
                details={"limit": limit},
                code="too_many_webhooks",
            )
        created = WebhookCreated(**sub.public().model_dump(), secret=sub.secret)
        return json_response(
            created.model_dump_json().encode(),
            201,
            {"Location": f"/webhooks/{sub.id}"},
        )

    async def index(
        self, request: Request, principal: Principal, store: WebhookStore
    ) -> Response:
        subs = await _stored(store.subscriptions(principal.partner_id))
        body = WebhookList(webhooks=[s.public() for s in subs])
        return json_response(body.model_dump_json().encode())

    async def show(
        self, request: Request, principal: Principal, store: WebhookStore
    ) -> Response:
        sub = await self._subscription(store, principal, request)
        return json_response(sub.public().model_dump_json().encode())

    async def remove(
        self, request: Request, principal: Principal, store: WebhookStore
    ) -> Response:
        webhook_id = path_entity_id(request, "webhook_id")
        if not await _stored(store.delete(principal.partner_id, webhook_id)):
            raise not_found("webhook_id", webhook_id)
        return Response(status_code=204)

    async def deliveries(
        self, request: Request, principal: Principal, store: WebhookStore
    ) -> Response:
        sub = await self._subscription(store, principal, request)
        attempts = await _stored(store.deliveries(principal.partner_id, sub.id))
        return json_response(
            DeliveryList(deliveries=attempts).model_dump_json().encode()
        )

    async def redeliver(
        self, request: Request, principal: Principal, store: WebhookStore
    ) -> Response:
        sub = await self._subscription(store, principal, request)
        delivery_id = path_entity_id(request, "delivery_id")
        attempts = await _stored(store.deliveries(principal.partner_id, sub.id))
        latest = next((a for a in attempts if a.delivery_id == delivery_id), None)
        if latest is None:
            raise not_found("delivery_id", delivery_id)
        queued = RedeliveryRequest(
            request_id=str(uuid.uuid4()),
            partner_id=principal.partner_id,
            webhook_id=sub.id,
            delivery_id=delivery_id,
            requested_at=datetime.now(UTC),
            requested_by=principal.sub,
            transition=latest.transition,
        )
        try:
            entry = await _stored(store.request_redelivery(queued))
        except QueueFull as exc:
            raise TooManyRequests(
                f"{exc.limit} redelivery requests of this partner are waiting "
                "for the notifier, the limit; retry later",
                details={"limit": exc.limit, "scope": "partner"},
                retry_after_s=60,
                code="too_many_redeliveries",
            ) from exc
        if entry is None:  # deleted meanwhile
            raise not_found("webhook_id", sub.id)
        body = RedeliveryQueued(
            request_id=queued.request_id, webhook_id=sub.id, delivery_id=delivery_id
        )
        return json_response(body.model_dump_json().encode(), 202)

    def routes(self) -> list[Route]:
        guarded = self._guarded
        return [
            Route("/webhooks", guarded(self.create), methods=["POST"]),
            Route("/webhooks", guarded(self.index), methods=["GET"]),
            Route("/webhooks/{webhook_id}", guarded(self.show), methods=["GET"]),
            Route("/webhooks/{webhook_id}", guarded(self.remove), methods=["DELETE"]),
            Route(
                "/webhooks/{webhook_id}/deliveries",
                guarded(self.deliveries),
                methods=["GET"],
            ),
            Route(
                "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
                guarded(self.redeliver),
                methods=["POST"],
            ),
        ]
