"""Request/response helpers shared by the routes: bounded JSON bodies, validation
errors that name the field, ids in paths, the error response."""

from __future__ import annotations

import json
import re
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from api.errors import ApiError, BadRequest, PayloadTooLarge, UnsupportedMediaType
from schemas.events import EntityId, RefId

__all__ = [
    "ParsedQueries",
    "error_response",
    "json_response",
    "parse_json",
    "path_entity_id",
    "path_ref_id",
    "read_body",
    "read_json",
    "validate",
    "validation_details",
]

_JSON = "application/json"
M = TypeVar("M", bound=BaseModel)

_ENTITY_ID: TypeAdapter[str] = TypeAdapter(EntityId)
_REF_ID: TypeAdapter[str] = TypeAdapter(RefId)


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(content=body, status_code=status, media_type=_JSON, headers=headers)


def error_response(
    exc: ApiError, status: int | None = None, *, request_id: str | None = None
) -> Response:
    return json_response(
        orjson.dumps(exc.body(request_id)),
        status or exc.status_code,
        exc.headers or None,
    )


def _require_json_media_type(request: Request) -> None:
    media_type = request.headers.get("content-type", "").partition(";")[0]
    if media_type.strip().lower() != _JSON:
        raise UnsupportedMediaType(
            "the body must be sent with Content-Type: application/json",
            details={"field": "content-type"},
        )


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body; 415 unless sent as ``application/json`` (any
    parameters, e.g. ``charset=utf-8``), 413 beyond ``limit`` bytes, 400 if not
    JSON or if an object repeats a key."""
    return parse_json(await read_body(request, limit))


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, as :func:`read_json` checks it before parsing."""
    _require_json_media_type(request)
    length = request.headers.get("content-length")
    # isascii(): str.isdigit() is also true of "²" and other digits int() refuses.
    if (
        length is not None
        and length.isascii()
        and length.isdigit()
        and int(length) > limit
    ):
        raise PayloadTooLarge(
            f"request body over {limit} bytes", details={"limit": limit}
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"request body over {limit} bytes", details={"limit": limit}
            )
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """``body`` parsed; 400 if not JSON or if an object repeats a key."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"request body is not valid JSON: {exc}", details={"field": "body"}
        ) from exc
    _refuse_duplicate_keys(body, value)
    return value


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)


#: The end of an object key: its closing quote, blanks, the colon. Every key
#: of a JSON text ends so; a string value may contain it too.
_KEY_END = re.compile(rb'"[ \t\n\r]*:')


def _keys_in(value: Any) -> int:
    """How many keys the parsed objects of ``value`` have, nested ones too."""
    if isinstance(value, dict):
        return len(value) + sum(_keys_in(v) for v in value.values())
    if isinstance(value, list):
        return sum(_keys_in(v) for v in value)
    return 0


def _refuse_duplicate_keys(body: bytes, value: Any) -> None:
    """400 when an object repeats a key: parsers disagree on which one wins
    (orjson keeps the last), so ``{"role": "learner", "role": "instructor"}``
    must not mean anything.

    Fast path: a repeated key leaves orjson's objects with fewer keys than
    the text has key endings (:data:`_KEY_END`), and a string containing one
    only adds to the text's count; when the counts agree no key repeats.
    Otherwise a second pass with the standard library's C scanner decides,
    building no objects; orjson has no such check."""
    try:
        if len(_KEY_END.findall(body)) == _keys_in(value):
            return
        json.loads(body, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise BadRequest(
            f"request body repeats the key {exc.key!r} in one object",
            details={"field": exc.key},
        ) from exc
    except RecursionError as exc:
        # orjson takes up to 1,024 levels, the standard library fewer: no
        # request of ours nests anywhere near that deep.
        raise BadRequest(
            "request body nests too deeply", details={"field": "body"}
        ) from exc


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """One entry per error: the field, pydantic's message and, for a
    collection over its bound (schemas/limits.py), the ``limit``."""
    details: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False):
        entry: dict[str, Any] = {
            "field": ".".join(str(p) for p in err["loc"]) or "body",
            "message": err["msg"],
        }
        ctx = err.get("ctx", {})
        if err["type"] == "too_long" and "max_length" in ctx:
            entry["limit"] = ctx["max_length"]
        elif err["type"] == "row_too_large":
            entry["limit"] = ctx["limit"]
        details.append(entry)
    return details


def validate(model: type[M], data: Any) -> M:
    """``model`` from a JSON object; 400 naming every bad field otherwise."""
    if not isinstance(data, dict):
        raise BadRequest(
            "request body must be a JSON object", details={"field": "body"}
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = validation_details(exc)
        fields = ", ".join(sorted({e["field"] for e in errors}))
        raise BadRequest(f"invalid request body: {fields}", details=errors) from exc


class ParsedQueries(Generic[M]):
    """Query bodies parsed and validated once: the same bytes give the same
    frozen model (and the query echoed in the response), so a dashboard
    polling with one body skips the JSON parse, the duplicate-key check and
    pydantic (~10 % of a 304's CPU, docs/performance.md). Only valid bodies
    of at most :data:`MAX_BODY` bytes are kept, at most :data:`KEPT` of
    them, the oldest leaving first."""

    MAX_BODY = 2048
    KEPT = 4096

    def __init__(self, model: type[M]) -> None:
        if not model.model_config.get("frozen"):
            raise TypeError(f"{model.__name__} must be frozen to be shared")
        self.model = model
        self._kept: dict[bytes, tuple[M, bytes]] = {}

    def parse(self, body: bytes) -> tuple[M, bytes]:
        """The body's model and its JSON as echoed; 400 as :func:`validate`."""
        kept = self._kept.get(body)
        if kept is not None:
            return kept
        value = parse_json(body)
        parsed = (validate(self.model, value), orjson.dumps(value))
        if len(body) <= self.MAX_BODY:
            if len(self._kept) >= self.KEPT:
                del self._kept[next(iter(self._kept))]
            self._kept[body] = parsed
        return parsed


def _path(request: Request, name: str, adapter: TypeAdapter[str]) -> str:
    value = str(request.path_params[name])
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise BadRequest(f"{name} is not a valid id", details={"field": name}) from exc


def path_entity_id(request: Request, name: str) -> str:
    """A learning instance, registration or goal id from the path (400 if bad)."""
    return _path(request, name, _ENTITY_ID)


def path_ref_id(request: Request, name: str) -> str:
    """A module id from the path (IRIs allowed; 400 if bad)."""
    return _path(request, name, _REF_ID)
