"""Event validation is exactly as documented (docs/events.md; issue 10, point
11): what the schema refuses, the worker dead-letters, with a reason naming the
field. Exercised through the worker's own decode (``processors.batch.decode``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from processors.batch import Record, decode
from schemas.events import AttemptGraded, ModuleTagged

TOPIC = "mastery.registration-events.v1"
ATTEMPT: dict[str, Any] = {
    "type": "AttemptGraded",
    "schema_version": 1,
    "event_id": "e-1",
    "occurred_at": "2026-09-01T08:00:03Z",
    "attempt_id": "a-1",
    "registration_id": "reg-1",
    "module_id": "https://example.org/items/7",
    "is_correct": True,
    "interaction_end_time": "2026-09-01T08:00:03.250+02:00",
}


def _reason(event: dict[str, Any]) -> str | None:
    """The worker's rejection reason for ``event``, or None if it decodes."""
    record = Record(TOPIC, 0, 7, b"reg-1", orjson.dumps(event))
    decoded, rejected = decode([record])
    if decoded:
        return None
    (rejection,) = rejected
    return rejection.reason


def test_a_valid_attempt_decodes() -> None:
    assert _reason(ATTEMPT) is None


@pytest.mark.parametrize("value", ["no", "yes", "true", 1, 0, 1.0, None])
def test_is_correct_is_a_json_boolean_only(value: object) -> None:
    reason = _reason({**ATTEMPT, "is_correct": value})
    assert reason is not None
    assert "is_correct" in reason


@pytest.mark.parametrize(
    "value",
    [
        1_788_249_603,  # a Unix timestamp
        1.5e9,
        "1788249603",  # the same, as a string of digits
        "2026-09-01T08:00:03",  # no offset
        "2026-09-01 08:00:03Z",  # not RFC 3339's T
        "20260901T080003Z",  # ISO 8601 basic format
        "2026-09-01",
    ],
)
def test_timestamps_are_rfc3339_strings_with_an_offset(value: object) -> None:
    for field in ("occurred_at", "interaction_end_time"):
        reason = _reason({**ATTEMPT, field: value})
        assert reason is not None and field in reason, (field, value, reason)
        assert "RFC 3339" in reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("module_id", "mod\x00ule"),  # NUL
        ("module_id", "mod\u200bule"),  # zero-width space
        ("module_id", "\ufeffmodule"),  # byte order mark
        ("module_id", "mod\u202eule"),  # right-to-left override
        ("module_id", "mod\x1bule"),  # ESC
        ("registration_id", "reg\u200d1"),  # zero-width joiner
        ("attempt_id", "a\x00"),
        ("goal_id", "g\u2060"),  # word joiner
    ],
)
def test_ids_with_control_or_format_characters_are_refused(
    field: str, value: str
) -> None:
    reason = _reason({**ATTEMPT, field: value})
    assert reason is not None and field in reason, reason


def test_iris_with_non_ascii_letters_remain_valid_module_ids() -> None:
    assert _reason({**ATTEMPT, "module_id": "https://example.org/übung/7"}) is None


def test_catalog_ref_ids_refuse_format_characters_too() -> None:
    tagged = {
        "event_id": "e-2",
        "occurred_at": "2026-09-01T08:00:03Z",
        "partner_id": "p",
        "module_id": "m-1",
        "learning_objective_ids": ["lo\u200b1"],
    }
    with pytest.raises(ValueError, match="learning_objective_ids"):
        ModuleTagged.model_validate(tagged)
    assert ModuleTagged.model_validate({**tagged, "learning_objective_ids": ["lo1"]})


def test_python_datetimes_still_build_events() -> None:
    """The API builds events from datetime objects, not strings."""
    from datetime import UTC, datetime

    event = AttemptGraded.model_validate(
        {
            **ATTEMPT,
            "occurred_at": datetime(2026, 9, 1, tzinfo=UTC),
            "interaction_end_time": datetime(2026, 9, 1, tzinfo=UTC),
        }
    )
    assert event.interaction_end_time.year == 2026


def test_the_reason_is_the_one_docs_events_md_quotes() -> None:
    assert _reason({**ATTEMPT, "is_correct": "no"}) == (
        "invalid event: AttemptGraded.is_correct: Input should be a valid boolean"
    )


def test_the_spelled_out_class_is_unicode_cc_and_cf() -> None:
    """CONTROL_OR_FORMAT lists exactly the Cc and Cf code points of Unicode
    14 (Python 3.11's)."""
    import re
    import unicodedata

    from schemas.events import CONTROL_OR_FORMAT

    # Newer Pythons know newer Unicode versions, with a few more Cf code
    # points: there the list must still name nothing else.
    exact = unicodedata.unidata_version == "14.0.0"
    listed = re.compile(f"[{CONTROL_OR_FORMAT}]")
    for code_point in range(0x110000):
        char = chr(code_point)
        expected = unicodedata.category(char) in ("Cc", "Cf")
        found = bool(listed.match(char))
        assert found == expected if exact else found <= expected, hex(code_point)
