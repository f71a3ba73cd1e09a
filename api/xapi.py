"""xAPI 1.0.3 statements to graded attempts (docs/ingest.md, "xAPI").

A statement becomes an attempt when its verb is answered-/completed-style,
its ``result`` says whether it was right (``success``, else ``score.scaled``,
else ``score.raw`` of ``score.min``..``score.max``), its ``object`` is an
Activity (the module) and ``context.registration`` names the registration.
The statement ``id`` is the attempt id, so a re-sent statement is idempotent.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from api.attempts import Unmappable, attempt_id_from, validation_reason
from schemas.ingest import BatchGradedEvent

__all__ = ["ATTEMPT_VERBS", "GOAL_EXTENSION", "attempt_from_statement"]

#: Verbs whose statements report a graded attempt.
ATTEMPT_VERBS = frozenset(
    f"http://adlnet.gov/expapi/verbs/{verb}"
    for verb in ("answered", "completed", "passed", "failed", "scored")
)
#: ``context.extensions`` key naming the goal the attempt counts towards.
GOAL_EXTENSION = "https://mastery-stream.dev/xapi/extensions/goal-id"

_SOURCES = {
    "registration_id": "context.registration",
    "module_id": "object.id",
    "interaction_end_time": "timestamp",
    "goal_id": f"context.extensions[{GOAL_EXTENSION}]",
    "attempt_id": "id",
    "is_correct": "result",
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _score_error(score: dict[str, Any]) -> str | None:
    """What makes ``result.score`` invalid under xAPI 1.0.3 (section 4.1.5.1),
    or None: every part present is a finite number, ``scaled`` in [-1, 1],
    ``min < max`` and ``raw`` between them."""
    parts: dict[str, float] = {}
    for key in ("scaled", "raw", "min", "max"):
        if key not in score:
            continue
        number = _number(score[key])
        if number is None or not math.isfinite(number):
            return f"result.score.{key} must be a finite number"
        parts[key] = number
    if "scaled" in parts and not -1.0 <= parts["scaled"] <= 1.0:
        return "result.score.scaled must lie in [-1, 1]"
    low, high, raw = parts.get("min"), parts.get("max"), parts.get("raw")
    if low is not None and high is not None and not low < high:
        return "result.score.min must be less than result.score.max"
    if raw is not None and (
        (low is not None and raw < low) or (high is not None and raw > high)
    ):
        return "result.score.raw must lie between result.score.min and max"
    return None


def _correct(result: Any, min_score: float) -> bool | Unmappable:
    if not isinstance(result, dict):
        return Unmappable("no_result", "the statement has no result object")
    score = result.get("score")
    if score is not None:
        if not isinstance(score, dict):
            return Unmappable("invalid", "result.score must be an object")
        error = _score_error(score)
        if error is not None:
            return Unmappable("invalid", error)
    success = result.get("success")
    if isinstance(success, bool):
        return success
    if isinstance(score, dict):
        scaled = _number(score.get("scaled"))
        if scaled is not None:
            return scaled >= min_score
        raw, low, high = (_number(score.get(k)) for k in ("raw", "min", "max"))
        if raw is not None and high is not None:
            low = low or 0.0
            if high > low:
                return (raw - low) / (high - low) >= min_score
    return Unmappable(
        "no_correctness",
        "result has neither success, score.scaled nor score.raw with score.max",
    )


def attempt_from_statement(
    statement: Any, *, min_score: float, now: datetime
) -> BatchGradedEvent | Unmappable:
    """Map one statement, or say why it cannot be mapped."""
    if not isinstance(statement, dict):
        return Unmappable("not_a_statement", "a statement is a JSON object")
    verb = statement.get("verb")
    verb_id = verb.get("id") if isinstance(verb, dict) else None
    if verb_id not in ATTEMPT_VERBS:
        return Unmappable(
            "unsupported_verb",
            f"verb {verb_id!r} does not report a graded attempt (accepted: "
            f"{sorted(ATTEMPT_VERBS)})",
        )
    obj = statement.get("object")
    if not isinstance(obj, dict) or obj.get("objectType", "Activity") != "Activity":
        return Unmappable("unsupported_object", "the object must be an Activity")
    context = statement.get("context")
    context = context if isinstance(context, dict) else {}
    if "registration" not in context:
        return Unmappable(
            "no_registration", "context.registration names the registration"
        )
    correct = _correct(statement.get("result"), min_score)
    if isinstance(correct, Unmappable):
        return correct
    extensions = context.get("extensions")
    goal = extensions.get(GOAL_EXTENSION) if isinstance(extensions, dict) else None
    candidate = {
        "registration_id": context.get("registration"),
        "module_id": obj.get("id"),
        "is_correct": correct,
        "interaction_end_time": statement.get("timestamp", now),
        "goal_id": goal,
        "attempt_id": attempt_id_from(statement.get("id")),
    }
    try:
        return BatchGradedEvent.model_validate(candidate)
    except ValidationError as exc:
        return Unmappable("invalid", validation_reason(exc, _SOURCES))
