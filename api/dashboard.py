"""The instructor's dashboard: the static page and the one lookup it needs.

``GET /dashboard`` redirects to ``/dashboard/index.html``, served with its
script and style sheet from ``api/static/`` (plain HTML, CSS and JavaScript; no
build step, nothing loaded from elsewhere). The page reads through the public
endpoints; the only one added for it is ``GET /learning-instances/{li_id}/goals``
— which goals the learning instance has, and whether the caller sees the whole
class (partner admin, instructor) or only their own registration (a learner;
its id is returned). docs/dashboard.md describes the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from api._http import json_response, path_entity_id
from api.auth import Authenticator, authorize_partner
from api.errors import (
    Forbidden,
    NotFound,
    ServiceUnavailable,
    not_found,
    redis_unreachable,
)
from api.tokens import Principal
from schemas.read_model import NAMESPACE_LUA, ReadModelKeys

__all__ = ["STATIC_DIR", "DashboardRoutes", "LearningInstanceView", "RedisViewStore"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The page's files (a flat folder) and their media types.
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}

#: Sent with every dashboard response (docs/dashboard.md, "Security headers"):
#: the page loads its script and style sheet from this origin only, talks only
#: to this origin, cannot be framed, and sends no Referer (its URL fragment
#: names a learning instance).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self'; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class LearningInstanceView(Protocol):
    """What the caller may see of a learning instance, and its goals."""

    async def view(self, li_id: str, caller: str) -> dict[str, Any] | None: ...


# ARGV: prefix (the generation is resolved from it), li, caller. {} when the
# LI is unknown; else {partner_id, caller is instructor 0/1, caller's learner
# registration or '', goals...}.
# Keys as built by ReadModelKeys (tested in tests/unit/test_row_feed.py).
_VIEW_LUA = (
    NAMESPACE_LUA
    + """
local li, caller = ARGV[2], ARGV[3]
local meta = redis.call('GET', p .. ':li:' .. li)
if not meta then return {} end
local instructor, own = 0, false
if caller ~= '' then
  instructor = redis.call('SISMEMBER', p .. ':li:' .. li .. ':instructors', caller)
  own = redis.call('HGET', p .. ':li:' .. li .. ':learner-registrations', caller)
end
local out = {cjson.decode(meta)['partner_id'], instructor, own or ''}
for _, g in ipairs(redis.call('SMEMBERS', p .. ':li:' .. li .. ':goals')) do
  out[#out + 1] = g
end
return out
"""
)


class RedisViewStore:
    """:class:`LearningInstanceView` over the read model, one round trip."""

    def __init__(self, redis: Redis, keys: ReadModelKeys | None = None) -> None:
        self.keys = keys or ReadModelKeys()
        self._script = redis.register_script(_VIEW_LUA)

    async def view(self, li_id: str, caller: str) -> dict[str, Any] | None:
        try:
            result: list[bytes | int] = await self._script(
                keys=[], args=[self.keys.prefix, li_id, caller]
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise redis_unreachable(exc) from exc
        if not result:
            return None
        partner, instructor, own, *goals = result
        assert isinstance(partner, bytes) and isinstance(own, bytes)
        return {
            "partner_id": partner.decode(),
            "instructor": int(instructor) == 1,
            "registration_id": own.decode() or None,
            "goal_ids": sorted(g.decode() for g in goals if isinstance(g, bytes)),
        }


def _decide(principal: Principal, li_id: str, facts: dict[str, Any]) -> bytes:
    authorize_partner(principal, facts["partner_id"], "li_id", li_id)
    whole_class = (
        principal.unrestricted
        or "partner_admin" in principal.roles
        or facts["instructor"]
    )
    if not whole_class and facts["registration_id"] is None:
        raise Forbidden(
            "only a partner admin, an instructor or a learner of this learning "
            "instance may open its dashboard"
        )
    return orjson.dumps(
        {
            "learning_instance_id": li_id,
            "view": "class" if whole_class else "learner",
            "registration_id": facts["registration_id"],
            "goal_ids": facts["goal_ids"],
        }
    )


class DashboardRoutes:
    """The page's files and the learning instance's goal list."""

    def __init__(self, authn: Authenticator, views: LearningInstanceView | None):
        self.authn = authn
        self.views = views

    def routes(self) -> list[Route]:
        return [
            Route("/dashboard", self.redirect, methods=["GET"]),
            Route("/dashboard/{file}", self.static, methods=["GET"]),
            Route("/learning-instances/{li_id}/goals", self.goals, methods=["GET"]),
        ]

    async def redirect(self, request: Request) -> Response:
        # Relative URLs in the page resolve against /dashboard/; a fragment
        # (#li=...) is kept by the browser across the redirect.
        return RedirectResponse(
            "dashboard/index.html", status_code=308, headers=SECURITY_HEADERS
        )

    async def static(self, request: Request) -> Response:
        name = str(request.path_params["file"])
        if name not in _FILES:
            raise NotFound(
                f"no file {name!r} in the dashboard",
                details={"field": "file"},
                headers=SECURITY_HEADERS,
            )
        return FileResponse(
            STATIC_DIR / name,
            media_type=_FILES[name],
            headers={"Cache-Control": "no-cache", **SECURITY_HEADERS},
        )

    async def goals(self, request: Request) -> Response:
        principal = self.authn.authenticate(request)
        li_id = path_entity_id(request, "li_id")
        if self.views is None:
            raise ServiceUnavailable("the dashboard lookups are not configured")
        facts = await self.views.view(
            li_id, "" if principal.unrestricted else principal.sub
        )
        if facts is None:
            raise not_found("li_id", li_id)
        return json_response(_decide(principal, li_id, facts))
