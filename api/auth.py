"""The authorization seam: every endpoint asks one :class:`Authorizer`.

Issue "authentication with the contract's access rules" replaces
:class:`AllowAll` with bearer-token verification; the routes do not change.
"""

from __future__ import annotations

from typing import Literal, Protocol

from starlette.requests import Request

__all__ = ["Action", "AllowAll", "Authorizer"]

Action = Literal["read_learning_instance", "read_registration"]


class Authorizer(Protocol):
    """Raises an :class:`api.errors.ApiError` when the caller may not act."""

    async def authorize(
        self, request: Request, action: Action, resource_id: str
    ) -> None: ...


class AllowAll:
    """Development default: no authentication (the embedded stack only)."""

    async def authorize(
        self, request: Request, action: Action, resource_id: str
    ) -> None:
        return None
