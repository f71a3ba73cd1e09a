"""Minting development tokens (HS256 with the configured secret).

Production tokens come from the partner's identity provider; these exist for
``mastery token``, ``mastery dev`` and the test suite. Verifying is the API's
job (``api.tokens``); minting lives here so the CLI and the dev stack need not
import the API.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import Any

import jwt

from infra.settings import Settings

__all__ = ["MintError", "generate_secret", "mint_token"]


class MintError(RuntimeError):
    """A token cannot be minted with these settings (no HS256 secret)."""


def generate_secret() -> str:
    """A fresh random HS256 secret (for the embedded development stack)."""
    return secrets.token_urlsafe(48)


def mint_token(
    settings: Settings,
    *,
    sub: str,
    partner_id: str,
    roles: Iterable[str] = (),
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    """An HS256 token signed with the configured secret (development, tests).

    Production tokens come from the partner's identity provider; this exists
    for ``mastery token``, ``make demo`` and the test suite.
    """
    secret = settings.jwt_hs256_secret
    if secret is None:
        raise MintError("minting needs MASTERY_JWT_HS256_SECRET")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": sub,
        "partner_id": partner_id,
        "roles": sorted(set(roles)),
        "iat": issued,
        "exp": issued + ttl_s,
    }
    if settings.jwt_audience is not None:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer is not None:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, secret.get_secret_value(), algorithm="HS256")
