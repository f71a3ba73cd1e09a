"""ETags for the POST endpoints: polling that costs next to nothing.

A page's tag is made of two parts, neither of which needs the body:

- the page's **version**, 40 hex digits computed by Redis in the page's own
  Lua call (api/store.py): the SHA-1 of the read model's generation, the
  learning instance's change-stream last id (every changed row appends to it
  in the row's own transaction), its learner count and the goal templates;
- the request's **basis**, 16 hex digits: the XXH3 hash of
  :data:`PAGE_FORMAT`, the path and the query as echoed in the body.

Equal tags therefore mean equal bodies (the version over-approximates: a
change to any row of the learning instance gives every page of it a new
tag). A request whose ``If-None-Match`` holds a tag made for the same basis
sends its version along to Redis; when the version is still current Redis
answers with the access facts only, no row is read, and the route answers
``304 Not Modified`` once the access rules pass. RFC 9110 reserves 304 for
GET and HEAD (a failed precondition on other methods is 412); these POSTs are
reads, so they answer like a GET would (docs/dashboard.md).
"""

from __future__ import annotations

import xxhash
from starlette.responses import Response

__all__ = [
    "PAGE_FORMAT",
    "held_version",
    "page_response",
    "request_basis",
]

#: Changed whenever api/render.py renders the same rows into other bytes: a
#: client's tags of the former format then never match.
PAGE_FORMAT = b"status-and-progress page 1"
_VERSION_HEX = 40
_BASIS_HEX = 16
_TAG_LEN = _VERSION_HEX + _BASIS_HEX + 2  # with its quotes


def request_basis(path: str, query_json: bytes) -> str:
    """What of a page's body the request decides, as 16 hex digits."""
    parts = (PAGE_FORMAT, path.encode(), query_json)
    return xxhash.xxh3_64_hexdigest(b"\n".join(parts))


def held_version(header: str | None, basis: str) -> str:
    """The page version the client holds for this request: that of the first
    ``If-None-Match`` tag made for ``basis`` (weak comparison, RFC 9110
    section 13.1.2: a ``W/`` prefix is ignored), ``*`` for any, else ``""``."""
    if header is None:
        return ""
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*":
            return "*"
        tag = tag.removeprefix("W/")
        if (
            len(tag) == _TAG_LEN
            and tag[0] == tag[-1] == '"'
            and tag[_VERSION_HEX + 1 : -1] == basis
        ):
            return tag[1 : _VERSION_HEX + 1]
    return ""


class _PageResponse(Response):
    """A page's answer with its headers built once, as bytes (Starlette's
    Response builds and encodes them from a dict per request)."""

    def __init__(self, etag: bytes, body: bytes | None) -> None:
        self.background = None
        if body is None:
            self.status_code = 304
            self.body = b""
            self.raw_headers = [(b"etag", etag), _CACHE_CONTROL]
        else:
            self.status_code = 200
            self.body = body
            self.raw_headers = [
                (b"etag", etag),
                _CACHE_CONTROL,
                (b"content-length", str(len(body)).encode()),
                (b"content-type", b"application/json"),
            ]


_CACHE_CONTROL = (b"cache-control", b"private, no-cache")


def page_response(version: str, basis: str, body: bytes | None) -> Response:
    """200 with ``body`` and the page's ``ETag``, or 304 when ``body`` is None
    (the client holds this version)."""
    return _PageResponse(f'"{version}{basis}"'.encode(), body)
