"""The instructor's dashboard: the static page and the one lookup it needs.

``GET /dashboard`` redirects to ``/dashboard/index.html``, served with its
script and style sheet from ``api/static/`` (plain HTML, CSS and JavaScript; no
build step, nothing loaded from elsewhere). The page reads through the public
endpoints; the only one added for it is ``GET /learning-instances/{li_id}/goals``
— which goals the learning instance has, and whether the caller sees the whole
class (partner admin, instructor) or only their own registration (a learner;
its id is returned), with the display names the catalog and the registrations
carry (the learning instance's title, goals' titles, targets' names, learners'
names; a learner gets only their own name). docs/dashboard.md describes the page.
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
from infra.read_model import Generation, ReadModelKeys
from infra.read_model.scripts import VIEW_LUA, view_keys

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


class RedisViewStore:
    """:class:`LearningInstanceView` over the read model: one script in the
    learning instance's slot (``VIEW_LUA``)."""

    def __init__(self, redis: Redis, keys: ReadModelKeys | None = None) -> None:
        self.keys = keys or ReadModelKeys()
        self.generation = Generation(redis, self.keys)
        self._script = redis.register_script(VIEW_LUA)

    async def view(self, li_id: str, caller: str) -> dict[str, Any] | None:
        try:
            keys: ReadModelKeys | None = await self.generation.current()
            while keys is not None:
                result: list[bytes | int] = await self._script(
                    keys=view_keys(keys, li_id), args=[caller]
                )
                if result:
                    break
                keys = await self.generation.moved(keys)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise redis_unreachable(exc) from exc
        if not result:
            return None
        partner, instructor, own, title, count, *rest = result
        assert isinstance(partner, bytes) and isinstance(own, bytes)
        assert isinstance(title, bytes)
        n = 2 * int(count)
        goals, learners = rest[:n], rest[n:]
        goal_names = {
            bytes(g).decode(): orjson.loads(bytes(names)) if names else {}
            for g, names in zip(goals[::2], goals[1::2], strict=True)
        }
        return {
            "partner_id": partner.decode(),
            "instructor": int(instructor) == 1,
            "registration_id": own.decode() or None,
            "goal_ids": sorted(goal_names),
            "title": title.decode() or None,
            "goal_names": goal_names,
            "learner_names": {
                bytes(r).decode(): bytes(name).decode()
                for r, name in zip(learners[::2], learners[1::2], strict=True)
            },
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
    own = facts["registration_id"]
    learner_names = facts.get("learner_names", {})
    if not whole_class:  # a learner sees their own name only
        learner_names = {r: n for r, n in learner_names.items() if r == own}
    names: dict[str, Any] = {
        "learning_instance": facts.get("title"),
        "goals": {g: n for g, n in facts.get("goal_names", {}).items() if n},
        "registrations": learner_names,
    }
    return orjson.dumps(
        {
            "learning_instance_id": li_id,
            "view": "class" if whole_class else "learner",
            "registration_id": own,
            "goal_ids": facts["goal_ids"],
            "names": names,
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
