"""IMS Caliper 1.2 events to graded attempts (docs/ingest.md, "Caliper").

- ``GradeEvent`` (action ``Graded``): ``object`` is the Attempt, its
  ``assignable`` the module; ``generated`` is the Score, correct when
  ``scoreGiven / maxScore`` reaches the configured fraction.
- ``AssessmentItemEvent`` (action ``Completed``): ``object`` is the item (the
  module); Caliper has no correctness here, so ``extensions.isCorrect`` (on the
  event or on the generated Response) must say it.

Caliper has no registrations: ``extensions.registrationId`` names one
(``extensions.goalId`` optionally the goal). The event ``id``
(``urn:uuid:…``) is the attempt id, so a re-sent event is idempotent.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from api.attempts import Unmappable, attempt_id_from, validation_reason
from schemas.ingest import BatchGradedEvent

__all__ = ["CALIPER_DATA_VERSION", "attempt_from_event"]

CALIPER_DATA_VERSION = "http://purl.imsglobal.org/ctx/caliper/v1p2"

_SOURCES = {
    "registration_id": "extensions.registrationId",
    "module_id": "the module (object.assignable.id or object.id)",
    "interaction_end_time": "endedAtTime or eventTime",
    "goal_id": "extensions.goalId",
    "attempt_id": "id",
}


def _id(entity: Any) -> Any:
    """A Caliper entity is an object with an ``id`` or just its IRI."""
    return entity.get("id") if isinstance(entity, dict) else entity


def _number(value: Any) -> float | None:
    """A finite number, or None (1e400 parses as infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _grade(
    event: dict[str, Any], min_score: float
) -> tuple[Any, bool, Any] | Unmappable:
    attempt = event.get("object")
    if not isinstance(attempt, dict) or "assignable" not in attempt:
        return Unmappable(
            "unsupported_object", "a GradeEvent's object is an Attempt with assignable"
        )
    score = _dict(event.get("generated"))
    given, best = _number(score.get("scoreGiven")), _number(score.get("maxScore"))
    if given is None or best is None or best <= 0:
        return Unmappable(
            "no_correctness",
            "generated must be a Score with a finite scoreGiven and a positive, "
            "finite maxScore",
        )
    ended = attempt.get("endedAtTime") or event.get("eventTime")
    return _id(attempt["assignable"]), given / best >= min_score, ended


def _item(event: dict[str, Any]) -> tuple[Any, bool, Any] | Unmappable:
    generated = _dict(event.get("generated"))
    correct = _dict(event.get("extensions")).get(
        "isCorrect", _dict(generated.get("extensions")).get("isCorrect")
    )
    if not isinstance(correct, bool):
        return Unmappable(
            "no_correctness",
            "an AssessmentItemEvent carries no correctness: set extensions.isCorrect "
            "(or send a GradeEvent)",
        )
    ended = generated.get("endedAtTime") or event.get("eventTime")
    return _id(event.get("object")), correct, ended


def attempt_from_event(
    event: Any, *, min_score: float
) -> BatchGradedEvent | Unmappable:
    """Map one Caliper event, or say why it cannot be mapped."""
    if not isinstance(event, dict):
        return Unmappable("not_an_event", "a Caliper event is a JSON object")
    kind, action = event.get("type"), event.get("action")
    if kind == "GradeEvent" and action == "Graded":
        mapped = _grade(event, min_score)
    elif kind == "AssessmentItemEvent" and action == "Completed":
        mapped = _item(event)
    else:
        return Unmappable(
            "unsupported_event",
            f"{kind!r} with action {action!r} is not a graded attempt (accepted: "
            f"GradeEvent/Graded, AssessmentItemEvent/Completed)",
        )
    if isinstance(mapped, Unmappable):
        return mapped
    module, correct, ended = mapped
    extensions = _dict(event.get("extensions"))
    if "registrationId" not in extensions:
        return Unmappable(
            "no_registration", "extensions.registrationId names the registration"
        )
    candidate = {
        "registration_id": extensions.get("registrationId"),
        "module_id": module,
        "is_correct": correct,
        "interaction_end_time": ended,
        "goal_id": extensions.get("goalId"),
        "attempt_id": attempt_id_from(event.get("id")),
    }
    try:
        return BatchGradedEvent.model_validate(candidate)
    except ValidationError as exc:
        return Unmappable("invalid", validation_reason(exc, _SOURCES))
