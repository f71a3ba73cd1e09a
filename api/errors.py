"""API errors: one root exception, subclasses carrying data, one JSON shape.

Every error body is ``{"error": {"code", "message", "details"}}``; an error may
also carry response headers (``WWW-Authenticate`` on 401, ``Retry-After`` on
503).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ApiError",
    "BadRequest",
    "BrokerLost",
    "BrokerUnavailable",
    "Conflict",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "not_found",
    "redact_addresses",
    "redis_unreachable",
]


class ApiError(Exception):
    """Root of all errors the API maps to an HTTP response."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}
        if code is not None:
            self.code = code

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "details": self.details,
        }
        if request_id is not None:
            error["request_id"] = request_id
        return {"error": error}


class BadRequest(ApiError):
    status_code = 400
    code = "invalid_request"


class Unauthorized(ApiError):
    """No valid bearer token: answered with ``WWW-Authenticate: Bearer``."""

    status_code = 401
    code = "unauthorized"

    def __init__(
        self, message: str, *, invalid_token: bool = False, reason: str = "missing"
    ) -> None:
        #: short fixed label for metrics: missing, malformed_header, or the
        #: token's refusal reason (api.tokens.InvalidToken.reason)
        self.reason = reason
        # RFC 6750 section 3: error="invalid_token" only when a token was sent.
        challenge = 'Bearer realm="mastery-stream"'
        if invalid_token:
            challenge += (
                f', error="invalid_token", error_description="{_description(message)}"'
            )
        super().__init__(message, headers={"WWW-Authenticate": challenge})


#: RFC 6750 section 3: error_description is %x20-21 / %x23-5B / %x5D-7E.
_NOT_IN_DESCRIPTION = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
#: The message may quote the token (an ``alg`` value): keep the header short.
_MAX_DESCRIPTION = 200


def _description(message: str) -> str:
    """``message`` as a header-safe ``error_description``: a token's content
    (any Unicode, quotes, control characters) must never make the response
    header unencodable, which would turn a 401 into a 500."""
    safe = _NOT_IN_DESCRIPTION.sub("?", message)
    if len(safe) > _MAX_DESCRIPTION:
        safe = safe[: _MAX_DESCRIPTION - 3] + "..."
    return safe


class Forbidden(ApiError):
    """The caller is known but lacks a role; only where that reveals nothing."""

    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class TooManyRequests(ApiError):
    """A limit (open streams, a partner's share) was reached: answered with
    ``Retry-After``."""

    status_code = 429
    code = "too_many_streams"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        retry_after_s: int = 5,
        code: str | None = None,
    ) -> None:
        super().__init__(
            message,
            details=details,
            code=code,
            headers={"Retry-After": str(retry_after_s)},
        )


class UnsupportedMediaType(ApiError):
    """A JSON endpoint called without ``Content-Type: application/json``."""

    status_code = 415
    code = "unsupported_media_type"


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "read_model_unavailable"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        code: str | None = None,
        retry_after_s: int = 1,
    ) -> None:
        super().__init__(
            message,
            details=details,
            code=code,
            headers={"Retry-After": str(retry_after_s)},
        )


class BrokerUnavailable(ServiceUnavailable):
    """The broker did not acknowledge every event of a request.

    ``details.stored`` lists the indexes (in request order) of the events the
    broker did acknowledge; the others may or may not have been stored.
    """

    code = "broker_unavailable"


class BrokerLost(BrokerUnavailable):
    """A worker reported that the broker lost records it had read
    (api/broker_loss.py): no event is produced (``details.stored`` is empty)
    until an operator clears the report."""

    code = "broker_lost_data"


#: host:port, IPv4 and bracketed IPv6 addresses, and aiokafka's
#: ``('host', port, family)`` tuples, as client libraries put them in their
#: messages; times of day (``15:54:25``, ``+00:00``) and ``topic[0]`` are not.
_ADDRESS = re.compile(
    r"(?<=\()\s*'[^']*'\s*,\s*\d+"  # ('host', port[, family])
    r"|\[[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\](?::\d+)?"  # [v6]:port
    r"|(?<![\w:.+-])(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b(?![:.]?\d)"  # v4[:port]
    # host:port, not a time of day (hh:mm:ss, +hh:mm) nor part of a longer word
    r"|(?<![\w:.+-])[A-Za-z0-9][A-Za-z0-9.-]*:\d{1,5}\b(?![:.]?\d)"
)


def redact_addresses(text: str) -> str:
    """``text`` (an infrastructure error's message) without the addresses of
    the servers behind the API: an error body is public, the log is not."""
    return _ADDRESS.sub("<address>", text)


def redis_unreachable(exc: Exception) -> ServiceUnavailable:
    """The one 503 for a Redis call that failed; the full reason (with the
    server's address) is logged with the request id by the error handler."""
    return ServiceUnavailable(
        "the read model (Redis) is unreachable; retry shortly",
        details={"reason": redact_addresses(str(exc)) or type(exc).__name__},
    )


def not_found(field: str, ident: str) -> NotFound:
    """The one 404 for an id that does not exist *or* belongs to another partner.

    Both cases must be byte-identical so a guessed id reveals nothing.
    """
    return NotFound(f"{field} {ident!r} not found", details={"field": field})
