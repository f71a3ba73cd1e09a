"""Bearer tokens: verifying signed JWTs (PyJWT). Minting lives in infra.tokens.

Accepted algorithms are exactly those a key is configured for: HS256 with the
shared secret, RS256 with the PEM public key. The key is chosen by the token's
``alg`` header *before* verification, so a token can never pick its own key
(no RS256/HS256 confusion) and ``alg: none`` or any other algorithm is refused.
Nothing is cached: every request's token is verified (HS256 costs ~20 µs).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.types import Options

from infra.settings import Settings, default

__all__ = [
    "KNOWN_ROLES",
    "MIN_HS256_SECRET_BYTES",
    "AuthConfigError",
    "InvalidToken",
    "Principal",
    "TokenVerifier",
    "verifier_from_settings",
]

#: Roles a token may carry. Instructor and learner are *not* token roles: they
#: are facts of the event stream, read from the read model per request.
KNOWN_ROLES = frozenset({"partner_admin", "ingest"})
#: RFC 7518 section 3.2: an HS256 key must be at least as long as the hash.
MIN_HS256_SECRET_BYTES = 32

#: The pattern of :data:`schemas.events.EntityId` (a regex: ~1 µs, on every request).
_ENTITY_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")


class AuthConfigError(RuntimeError):
    """Authentication is on but cannot work (no key, a bad key)."""


class InvalidToken(Exception):
    """The token was refused; the message says why (safe to show the caller).

    ``reason`` is a short fixed label for metrics (``mastery_api_auth_failures_total``).
    """

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the verified claims of the token.

    ``unrestricted`` is only set when authentication is off (``auth_mode
    "none"``): every check passes.
    """

    sub: str
    partner_id: str
    roles: frozenset[str]
    unrestricted: bool = False
    #: Unix time from which the API refuses the token (its ``exp`` plus the
    #: leeway); a live stream ends then (api/stream.py). None: never.
    refused_from: float | None = None

    def has_role(self, *roles: str) -> bool:
        return self.unrestricted or not self.roles.isdisjoint(roles)


#: Verified tokens a TokenVerifier remembers (~0.5 KB each).
VERIFIED_TOKENS_KEPT = 10_000


class TokenVerifier:
    """Verifies bearer tokens against the configured keys."""

    def __init__(
        self,
        *,
        hs256_secret: str | None = None,
        rs256_public_key: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway_s: int = default("jwt_leeway_s"),
    ) -> None:
        self._keys: dict[str, Any] = {}
        if hs256_secret is not None:
            if len(hs256_secret.encode()) < MIN_HS256_SECRET_BYTES:
                raise AuthConfigError(
                    f"MASTERY_JWT_HS256_SECRET must be at least "
                    f"{MIN_HS256_SECRET_BYTES} bytes"
                )
            self._keys["HS256"] = hs256_secret.encode()
        if rs256_public_key is not None:
            try:
                key = load_pem_public_key(rs256_public_key.encode())
            except ValueError as exc:
                raise AuthConfigError(
                    f"MASTERY_JWT_RS256_PUBLIC_KEY is not a PEM public key: {exc}"
                ) from exc
            if not isinstance(key, RSAPublicKey):
                raise AuthConfigError("MASTERY_JWT_RS256_PUBLIC_KEY is not an RSA key")
            self._keys["RS256"] = key
        if not self._keys:
            raise AuthConfigError(
                "authentication is on (MASTERY_AUTH_MODE=jwt) but no key is "
                "configured: set MASTERY_JWT_HS256_SECRET or "
                "MASTERY_JWT_RS256_PUBLIC_KEY (or MASTERY_AUTH_MODE=none for a "
                "local experiment)"
            )
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway_s
        required = ["exp", "sub", "partner_id"]
        if audience is not None:
            required.append("aud")
        if issuer is not None:
            required.append("iss")
        self._options: Options = {"require": required}
        # Tokens verified before, with the time from which each is refused:
        # a dashboard polls with the same token, and a signature check plus
        # PyJWT's parsing were ~19 % of a 304's CPU (docs/performance.md).
        # Only verified tokens enter; the signature and every claim but the
        # expiry are fixed by the token's bytes, so only the expiry is
        # checked again. Bounded: the oldest entry leaves first.
        self._verified: dict[str, Principal] = {}
        self.clock: Callable[[], float] = time.time

    @property
    def algorithms(self) -> list[str]:
        return sorted(self._keys)

    def verify(self, token: str) -> Principal:
        """The token's principal, or :class:`InvalidToken` saying why not."""
        known = self._verified.get(token)
        if known is not None:
            if known.refused_from is None or self.clock() < known.refused_from:
                return known
            del self._verified[token]  # expired: verified again, refused
        principal = self._verify(token)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = principal
        return principal

    def _verify(self, token: str) -> Principal:
        header = _header(token)
        alg = header.get("alg")
        key = self._keys.get(alg) if isinstance(alg, str) else None
        if key is None or not isinstance(alg, str):
            raise InvalidToken(
                f"algorithm {alg!r} is not accepted (accepted: {self.algorithms})",
                reason="algorithm",
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired", reason="expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken("bad signature", reason="bad_signature") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(
                f"token lacks the {exc.claim!r} claim", reason="missing_claim"
            ) from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"invalid token: {exc}") from exc
        principal = _principal(claims)
        exp = claims["exp"]
        if isinstance(exp, int | float):
            principal = replace(principal, refused_from=float(exp) + self._leeway)
        return principal


def _header(token: str) -> dict[str, Any]:
    # The header alone, parsed by hand: 1-2 µs instead of PyJWT's ~13 µs for
    # get_unverified_header (which parses the whole token); PyJWT then
    # verifies the complete token.
    head, dot, _ = token.partition(".")
    try:
        if not dot:
            raise ValueError("no '.'")
        header = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except ValueError as exc:  # binascii.Error and JSONDecodeError included
        raise InvalidToken("malformed token", reason="malformed") from exc
    if not isinstance(header, dict):
        raise InvalidToken("malformed token", reason="malformed")
    return header


def _principal(claims: dict[str, Any]) -> Principal:
    sub, partner_id = claims["sub"], claims["partner_id"]
    if not (
        isinstance(sub, str)
        and isinstance(partner_id, str)
        and _ENTITY_ID.fullmatch(sub)
        and _ENTITY_ID.fullmatch(partner_id)
    ):
        raise InvalidToken("'sub' and 'partner_id' must be ids", reason="bad_claims")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InvalidToken("'roles' must be a list of strings", reason="bad_claims")
    # Unknown roles are ignored rather than refused: an identity provider may
    # put its own roles into the same claim.
    return Principal(sub, partner_id, frozenset(roles) & KNOWN_ROLES)


def verifier_from_settings(settings: Settings) -> TokenVerifier:
    """The verifier for ``auth_mode="jwt"``; :class:`AuthConfigError` if unusable."""
    secret = settings.jwt_hs256_secret
    return TokenVerifier(
        hs256_secret=secret.get_secret_value() if secret is not None else None,
        rs256_public_key=settings.jwt_rs256_public_key,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway_s=settings.jwt_leeway_s,
    )
