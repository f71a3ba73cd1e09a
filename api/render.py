"""The status-and-progress response body, assembled from the stored row bytes.

Shared by the POST endpoints (api/app.py) and the live streams' snapshot
(api/stream.py): the rows are concatenated, never decoded and re-encoded
(docs/read-model.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from api.errors import BadRequest, Conflict, NotFound
from api.store import Page

__all__ = [
    "render_page",
    "require_a_learner",
    "require_known_goals",
    "require_within_bytes",
]


def require_known_goals(page: Page) -> None:
    """404 naming the requested goals that are not the learning instance's."""
    if page.unknown_goals:
        unknown = list(page.unknown_goals)
        raise NotFound(
            f"goal_ids not found in this learning instance: {unknown}",
            details={"field": "goal_ids", "goal_ids": unknown},
            code="goal_not_found",
        )


def require_a_learner(page: Page, reg_id: str) -> None:
    """409 for an instructor's registration: the learning instance's listing
    has rows for its learners only, and so has the registration endpoint
    (docs/read-model.md, "Who has a row")."""
    if page.not_a_learner:
        raise Conflict(
            f"registration {reg_id!r} is an instructor's: only learners' "
            "registrations have status and progress (they are the rows of the "
            "learning instance's listing)",
            details={"field": "reg_id"},
            code="registration_not_a_learner",
        )


def require_within_bytes(page: Page, limit: int, field: str, hint: str) -> None:
    """400 naming ``field`` and ``limit`` when the page's rows exceed ``limit``
    bytes (schemas/limits.py): the rows are bounded one by one, a page of
    many learners and goals is bounded here."""
    size = page.row_bytes
    if size > limit:
        raise BadRequest(
            f"the rows asked for are {size} bytes, more than the limit of "
            f"{limit}; {hint}",
            details={"field": field, "limit": limit, "size": size},
            code="response_too_large",
        )


def render_page(
    query_json: bytes,
    goal_ids: Sequence[str],
    page: Page,
    next_: dict[str, int] | None,
) -> bytes:
    """``{"query", "column_headers", "data"[, "next"]}`` of the contract;
    ``query_json`` is the request's query, echoed (JSON)."""
    parts = [
        b'{"query":',
        query_json,
        b',"column_headers":',
        orjson.dumps(list(goal_ids)),
        b',"data":[',
        page.data,
        b"]",
    ]
    if next_ is not None:
        parts += [b',"next":', orjson.dumps(next_)]
    parts.append(b"}")
    return b"".join(parts)
