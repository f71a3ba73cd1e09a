"""Authentication (who calls) and the contract's access rules (may they).

Token roles are only ``partner_admin`` and ``ingest``. Whether the caller is an
instructor of a learning instance, or the learner of a registration, is a fact
of the event stream: the read model answers it in the same Redis round trip
that reads the page (:class:`api.store.Access`). The rules are pure functions
of the principal and those facts; docs/auth.md explains the 404-versus-403
choice.
"""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request

from api.errors import Forbidden, Unauthorized, not_found
from api.store import Access
from api.tokens import InvalidToken, Principal, TokenVerifier, verifier_from_settings
from infra.settings import Settings, default

__all__ = [
    "Authenticator",
    "BearerAuthenticator",
    "NoAuthentication",
    "authenticator_from_settings",
    "authorize_learning_instance",
    "authorize_partner",
    "authorize_registration",
    "require_role",
]


class Authenticator(Protocol):
    """Turns a request into a :class:`Principal` or raises :class:`Unauthorized`."""

    def authenticate(self, request: Request) -> Principal: ...


class BearerAuthenticator:
    """``Authorization: Bearer <JWT>``, verified on every request."""

    def __init__(
        self, verifier: TokenVerifier, max_token_bytes: int = default("max_token_bytes")
    ) -> None:
        self.verifier = verifier
        self.max_token_bytes = max_token_bytes

    def authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            raise Unauthorized("a bearer token is required")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "the Authorization header must be 'Bearer <token>'",
                invalid_token=True,
                reason="malformed_header",
            )
        # Refused unread: verifying costs time proportional to the size.
        if len(token) > self.max_token_bytes:
            raise Unauthorized(
                f"token longer than {self.max_token_bytes} bytes",
                invalid_token=True,
                reason="too_large",
            )
        try:
            return self.verifier.verify(token)
        except InvalidToken as exc:
            raise Unauthorized(str(exc), invalid_token=True, reason=exc.reason) from exc


class NoAuthentication:
    """``auth_mode="none"``: every caller may do everything (local use only)."""

    def __init__(self, partner_id: str = "dev") -> None:
        self.principal = Principal(
            sub="anonymous",
            partner_id=partner_id,
            roles=frozenset({"partner_admin", "ingest"}),
            unrestricted=True,
        )

    def authenticate(self, request: Request) -> Principal:
        return self.principal


def authenticator_from_settings(settings: Settings) -> Authenticator:
    """The configured authenticator; raises AuthConfigError when JWT has no key."""
    if settings.auth_mode == "none":
        return NoAuthentication()
    return BearerAuthenticator(
        verifier_from_settings(settings), max_token_bytes=settings.max_token_bytes
    )


def require_role(principal: Principal, *roles: str) -> None:
    """403 unless the token carries one of ``roles`` (reveals no data)."""
    if not principal.has_role(*roles):
        raise Forbidden(
            f"this endpoint needs one of the roles {sorted(roles)} (claim roles)",
            details={"required_roles": sorted(roles)},
        )


def authorize_partner(
    principal: Principal, partner_id: str | None, field: str, ident: str
) -> None:
    """404, exactly as for an unknown id, when the resource is another partner's."""
    if principal.unrestricted:
        return
    if partner_id is None or partner_id != principal.partner_id:
        raise not_found(field, ident)


def authorize_learning_instance(
    principal: Principal, access: Access, li_id: str
) -> None:
    """Partner admin of the LI's partner, or an instructor registered in it."""
    authorize_partner(principal, access.partner_id, "li_id", li_id)
    if principal.unrestricted or "partner_admin" in principal.roles:
        return
    if access.caller_is_instructor:
        return
    raise Forbidden(
        "only a partner admin or an instructor of this learning instance may "
        "read its status and progress: the token needs the role partner_admin "
        "(claim roles), or a sub (claim) that is the user_id of an instructor "
        "registration in it",
        details={
            "required_roles": ["partner_admin"],
            "or_claim": "sub = user_id of an instructor registration in li_id",
        },
    )


def authorize_registration(principal: Principal, access: Access, reg_id: str) -> None:
    """As for the learning instance, or the user of the registration."""
    authorize_partner(principal, access.partner_id, "reg_id", reg_id)
    if principal.unrestricted or "partner_admin" in principal.roles:
        return
    if access.caller_is_instructor or access.registration_user_id == principal.sub:
        return
    raise Forbidden(
        "only a partner admin, an instructor of the learning instance or the "
        "registered user may read this registration's status and progress: the "
        "token needs the role partner_admin (claim roles), or a sub (claim) that "
        "is the registration's user_id or the user_id of an instructor "
        "registration in its learning instance",
        details={
            "required_roles": ["partner_admin"],
            "or_claim": "sub = user_id of the registration, or of an instructor "
            "registration in its learning instance",
        },
    )
