"""Live status and progress as Server-Sent Events (docs/dashboard.md).

``GET /learning-instances/{li_id}/metrics/status-and-progress/stream`` and
``GET /registrations/{reg_id}/metrics/status-and-progress/stream``, with
``?goal_ids=a,b`` (or ``goal_ids`` repeated):

1. ``event: snapshot`` — the whole table, the body the POST endpoint returns
   (all learners, no paging); its ``id`` is the change-stream id it is current at.
2. ``event: row`` per changed row, ``{"registration_id", "goal_id", "item"}``
   with ``item`` the new ``status_and_progress[]`` element; its ``id`` is the
   change's stream id.
3. ``: ping`` comments as heartbeats; ``event: end`` when the server ends the
   stream, ``data: {"reason": ...}``: ``slow_client`` (too slow to keep up) or
   ``unavailable`` (the read model unreachable), after which the client
   reconnects; ``token_expired`` when its token reaches the time from which
   the POST endpoints refuse it (``exp`` plus the leeway), after which the
   client must reconnect with a fresh token.

Access is checked at connect, with the rules of the POST endpoints. A client
that reconnects with ``Last-Event-ID`` gets every change after that id and no
snapshot, or a fresh snapshot when the id has left the change stream's window
or is malformed; an id past the stream's end means "from now". A client's id
never moves the reader that the learning instance's streams share
(api/change_hub.py).
Open streams are bounded per token subject, per partner and per process (429
beyond, ``details.scope`` token, partner or server), each
stream's queue is bounded and a client that does not read is closed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import orjson
from redis.exceptions import RedisError
from sse_starlette.sse import EventSourceResponse, SendTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api._http import path_entity_id, validate
from api.auth import Authenticator, authorize_learning_instance, authorize_registration
from api.change_hub import Change, ChangeHub, parse_stream_id
from api.errors import BadRequest, ServiceUnavailable, TooManyRequests
from api.render import (
    render_page,
    require_a_learner,
    require_known_goals,
    require_within_bytes,
)
from api.shares import Counts, once
from api.store import Snapshot
from api.tokens import Principal
from infra.settings import Settings
from schemas.api import RegistrationQuery
from schemas.limits import MAX_SNAPSHOT_BYTES

__all__ = ["SnapshotStore", "StreamConfig", "StreamLimits", "StreamRoutes"]

log = logging.getLogger(__name__)


class SnapshotStore(Protocol):
    """The port a stream starts from (``api.store.RedisPageStore``)."""

    async def snapshot(
        self,
        mode: Literal["li", "reg"],
        ident: str,
        goal_ids: list[str],
        caller: str,
        *,
        after: str | None,
        max_learners: int,
    ) -> Snapshot: ...


#: Settings' defaults, without reading the environment (the app a test builds
#: without a config gets production's limits).
_DEFAULTS = Settings.model_construct()


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """Limits and timings of the live streams (``MASTERY_STREAM_*``; the
    defaults are Settings')."""

    max_per_token: int = _DEFAULTS.stream_max_per_token
    max_total: int = _DEFAULTS.stream_max_total
    max_per_partner: int = _DEFAULTS.stream_max_per_partner
    heartbeat_s: float = _DEFAULTS.stream_heartbeat_s
    send_timeout_s: float = _DEFAULTS.stream_send_timeout_s
    max_learners: int = _DEFAULTS.stream_max_learners
    #: the reconnection delay the stream asks of clients (SSE ``retry:``)
    retry_ms: int = 2000

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamConfig:
        return cls(
            max_per_token=settings.stream_max_per_token,
            max_total=settings.stream_max_total,
            max_per_partner=settings.stream_max_per_partner,
            heartbeat_s=settings.stream_heartbeat_s,
            send_timeout_s=settings.stream_send_timeout_s,
            max_learners=settings.stream_max_learners,
        )


class StreamLimits:
    """Counts open streams per token subject, per partner and in total.

    The per-partner share keeps one partner with many tokens from taking every
    slot of the process (then every other partner got ``429 scope=server``).
    """

    def __init__(
        self, per_token: int, total: int, per_partner: int | None = None
    ) -> None:
        self.per_token = per_token
        self.total = total
        self.per_partner = total if per_partner is None else per_partner
        self._open = Counts()
        self._partners = Counts()
        self._count = 0

    @property
    def open(self) -> int:
        return self._count

    def acquire(self, key: str, partner: str = "") -> Callable[[], None]:
        """Take a slot or raise 429; returns the (idempotent) release."""
        if self._count >= self.total:
            raise TooManyRequests(
                f"this server has {self.total} open streams, its limit",
                details={"limit": self.total, "scope": "server"},
            )
        theirs = self._partners[partner]
        if theirs >= self.per_partner:
            raise TooManyRequests(
                f"this partner already has {theirs} open streams on this server, "
                "its share",
                details={"limit": self.per_partner, "scope": "partner"},
            )
        mine = self._open[key]
        if mine >= self.per_token:
            raise TooManyRequests(
                f"this token already has {mine} open streams, the limit",
                details={"limit": self.per_token, "scope": "token"},
            )
        self._open.add(key)
        self._partners.add(partner)
        self._count += 1
        return once(functools.partial(self._release, key, partner))

    def _release(self, key: str, partner: str) -> None:
        self._count -= 1
        self._open.remove(key)
        self._partners.remove(partner)


def _goal_ids(request: Request) -> list[str]:
    raw = [
        g
        for value in request.query_params.getlist("goal_ids")
        for g in value.split(",")
    ]
    if not raw:
        raise BadRequest(
            "the query parameter goal_ids is required (goal_ids=a,b)",
            details={"field": "goal_ids"},
        )
    return validate(RegistrationQuery, {"goal_ids": raw}).goal_ids


def _last_event_id(request: Request) -> str | None:
    """The client's resume point; a malformed one is ignored (the stream
    starts with a fresh snapshot), never an error: a client cannot do better
    than reconnect."""
    value = request.headers.get("last-event-id") or request.query_params.get(
        "last_event_id"
    )
    if not value or parse_stream_id(value) is None:
        return None
    return value


class _EventStream(EventSourceResponse):
    """An SSE response that treats a client reading nothing as routine."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            # The client stopped reading: its stream is over (its queue and
            # slot are released by the event generator's cleanup). Returning
            # leaves the response incomplete, so the server closes the
            # connection (uvicorn logs one line saying so).
            log.warning("closed %s: its client read nothing", scope.get("path"))


def _frame(event: str, event_id: str, data: bytes) -> bytes:
    return b"".join(
        [
            b"id: ",
            event_id.encode(),
            b"\nevent: ",
            event.encode(),
            b"\ndata: ",
            data,
            b"\n\n",
        ]
    )


def _row_frame(change: Change) -> bytes:
    return _frame(
        "row",
        change.id,
        b"".join(
            [
                b'{"registration_id":',
                orjson.dumps(change.registration_id),
                b',"goal_id":',
                orjson.dumps(change.goal_id),
                b',"item":',
                change.row,
                b"}",
            ]
        ),
    )


class StreamRoutes:
    """The two stream endpoints over a snapshot store and a change hub."""

    def __init__(
        self,
        authn: Authenticator,
        store: SnapshotStore | None,
        hub: ChangeHub | None,
        config: StreamConfig,
    ) -> None:
        self.authn = authn
        self.store = store
        self.hub = hub
        self.config = config
        self.limits = StreamLimits(
            config.max_per_token, config.max_total, config.max_per_partner
        )

    def routes(self) -> list[Route]:
        return [
            Route(
                "/learning-instances/{li_id}/metrics/status-and-progress/stream",
                self.learning_instance,
                methods=["GET"],
            ),
            Route(
                "/registrations/{reg_id}/metrics/status-and-progress/stream",
                self.registration,
                methods=["GET"],
            ),
        ]

    async def learning_instance(self, request: Request) -> Response:
        return await self._open(request, "li")

    async def registration(self, request: Request) -> Response:
        return await self._open(request, "reg")

    async def _open(self, request: Request, mode: Literal["li", "reg"]) -> Response:
        principal = self.authn.authenticate(request)
        field = "li_id" if mode == "li" else "reg_id"
        ident = path_entity_id(request, field)
        goal_ids = _goal_ids(request)
        after = _last_event_id(request)
        if self.hub is None or self.store is None:
            raise ServiceUnavailable("live streams are not configured on this server")
        release = self.limits.acquire(_limit_key(principal), principal.partner_id)
        try:
            snap = await self.store.snapshot(
                mode,
                ident,
                goal_ids,
                "" if principal.unrestricted else principal.sub,
                after=after,
                max_learners=self.config.max_learners,
            )
            if mode == "li":
                authorize_learning_instance(principal, snap.page.access, ident)
            else:
                authorize_registration(principal, snap.page.access, ident)
            require_known_goals(snap.page)
            require_a_learner(snap.page, ident)
            if snap.page.total > self.config.max_learners:
                raise BadRequest(
                    f"the learning instance has {snap.page.total} learners, more "
                    f"than a stream serves ({self.config.max_learners}); page "
                    "through the POST endpoint",
                    details={"field": "li_id", "limit": self.config.max_learners},
                )
            require_within_bytes(
                snap.page,
                MAX_SNAPSHOT_BYTES,
                "goal_ids",
                "open a stream with fewer goal_ids, or page through the POST endpoint",
            )
        except BaseException:
            release()
            raise
        body = self._events(
            snap, mode, ident, goal_ids, release, refused_from=principal.refused_from
        )
        return _EventStream(
            body,
            ping=self.config.heartbeat_s,
            send_timeout=self.config.send_timeout_s,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _events(
        self,
        snap: Snapshot,
        mode: Literal["li", "reg"],
        ident: str,
        goal_ids: list[str],
        release: Callable[[], None],
        *,
        refused_from: float | None = None,
    ) -> AsyncIterator[bytes]:
        assert self.hub is not None
        try:
            yield f"retry: {self.config.retry_ms}\n\n".encode()
            if not snap.resumed:
                body = render_page(
                    orjson.dumps({"goal_ids": goal_ids}), goal_ids, snap.page, None
                )
                yield _frame("snapshot", snap.last_id, body)
            async with self.hub.subscribe(
                snap.li_id,
                snap.last_id,
                goal_ids,
                ident if mode == "reg" else None,
            ) as sub:
                batches = sub.batches()
                while True:
                    # The token's end is the stream's: rows stop when the POST
                    # endpoints would refuse the same token.
                    left = None if refused_from is None else refused_from - time.time()
                    if left is not None and left <= 0:
                        reason = "token_expired"
                        break
                    try:
                        batch = await asyncio.wait_for(anext(batches), left)
                    except StopAsyncIteration:
                        reason = "slow_client" if sub.dropped else "unavailable"
                        break
                    except TimeoutError:
                        reason = "token_expired"
                        break
                    yield b"".join(_row_frame(c) for c in batch)
            yield b'event: end\ndata: {"reason":"' + reason.encode() + b'"}\n\n'
        except (RedisError, OSError) as exc:
            log.warning("stream of %s %s ended: %s", mode, ident, exc)
            yield b'event: end\ndata: {"reason":"unavailable"}\n\n'
        finally:
            release()


def _limit_key(principal: Principal) -> str:
    return f"{principal.partner_id}\x00{principal.sub}"
