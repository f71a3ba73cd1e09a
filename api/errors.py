"""API errors: one root exception, subclasses carrying data, one JSON shape.

Every error body is ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "BadRequest",
    "NotFound",
    "PayloadTooLarge",
    "ServiceUnavailable",
]


class ApiError(Exception):
    """Root of all errors the API maps to an HTTP response."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self, message: str, *, details: Any = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
            }
        }


class BadRequest(ApiError):
    status_code = 400
    code = "invalid_request"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "read_model_unavailable"
