"""A request id on every response, for matching an answer to the server's log.

Each HTTP request gets a fresh random id (the client's own ``X-Request-ID``
is not trusted: a log line must not carry what a client chose). It is sent
back as ``X-Request-ID``, is part of every 5xx error body
(``error.request_id``), and the log line that records the internal reason of
a 5xx (an address, an exception) carries it too, so error bodies never need
to.
"""

from __future__ import annotations

import itertools
import os
import secrets

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HEADER", "RequestIdMiddleware", "request_id"]

HEADER = "X-Request-ID"
_STATE_KEY = "request_id"


class _Ids:
    """Ids unique across processes and restarts: a random prefix drawn per
    process (again in a forked child) and a counter. Reading the OS's random
    source per request was ~3 % of a request's CPU; an id only has to match a
    response to a log line, not to be unguessable."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFF:08x}"


_ids = _Ids()


def request_id(request: Request) -> str | None:
    """The id the middleware gave this request (None outside it)."""
    value = request.scope.get("state", {}).get(_STATE_KEY)
    return value if isinstance(value, str) else None


class RequestIdMiddleware:
    """Pure ASGI: sets the id in the request's state and adds the header to
    the response start."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _ids.next()
        scope.setdefault("state", {})[_STATE_KEY] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((HEADER.lower().encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
