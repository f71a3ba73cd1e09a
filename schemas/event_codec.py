"""A fast path for the registration topic's common record.

pydantic stays the contract (:func:`schemas.events.decode_event`). The fast
path recognises one spelling of one event: an ``AttemptGraded`` exactly as
:func:`schemas.events.encode_event` writes it (keys in the model's field
order, no whitespace, no string escapes, ASCII only), with one regular
expression that spells out the schema's rules for that spelling, and builds
the frozen model pydantic would, the way ``BaseModel.model_construct`` does.
Whatever it cannot vouch for it leaves to pydantic, so every rejection and its
message still come from pydantic. tests/unit/test_event_codec.py checks with
hypothesis that both give equal models and accept the same records.

The rules of schemas/events.py, as the pattern implements them:

- ``event_id``, ``attempt_id``, ``registration_id``, ``goal_id`` (EntityId):
  the schema's own ``[A-Za-z0-9._~-]{1,128}``.
- ``module_id`` (RefId): 1 to 512 printable ASCII characters other than ``"``
  and ``\\``, a subset of what the schema accepts (printable ASCII holds no
  whitespace, control or format character); other ids take pydantic's path.
- ``is_correct`` (StrictBool): JSON ``true`` or ``false``.
- ``occurred_at``, ``interaction_end_time`` (Timestamp): RFC 3339 with an
  upper-case ``T``, hours 00-23, minutes and seconds 00-59, 0 to 9 fraction
  digits (truncated to microseconds, as pydantic does), ``Z`` or ``±HH:MM``.
  :meth:`datetime.fromisoformat` checks the date; the tzinfo is the one
  pydantic itself returns for that offset.
- ``schema_version`` 1 and ``type`` as literals; ``goal_id`` present or
  absent (``encode_event`` leaves out None; an explicit null takes pydantic's
  path).

``RegistrationCreated`` (one record per registration, about 1 % of the topic)
always takes pydantic's path: a second pattern would not pay for itself.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo
from typing import Final

from pydantic import TypeAdapter, ValidationError

from schemas.events import AttemptGraded, Event, Timestamp, decode_event

__all__ = ["decode_fast", "fast_attempt"]

#: AttemptGraded's fields in declaration order: pydantic fills ``__dict__`` in
#: this order, and encode_event writes the keys in it.
_FIELDS: Final = (
    "schema_version",
    "event_id",
    "occurred_at",
    "type",
    "attempt_id",
    "registration_id",
    "module_id",
    "is_correct",
    "interaction_end_time",
    "goal_id",
)
_SET_WITHOUT_GOAL: Final = frozenset(_FIELDS[:-1])
_SET_WITH_GOAL: Final = frozenset(_FIELDS)

_ENTITY = r"([A-Za-z0-9._~-]{1,128})"
_REF = r"([!#-\[\]-~]{1,512})"  # 0x21-0x7E without '"' (0x22) and '\' (0x5C)
# (date and time without offset)(offset)
_TIME = (
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,9})?)(Z|[+-][0-9]{2}:[0-9]{2})"
)
_ATTEMPT: Final = re.compile(
    rf'\{{"schema_version":1,"event_id":"{_ENTITY}","occurred_at":"{_TIME}",'
    rf'"type":"AttemptGraded","attempt_id":"{_ENTITY}",'
    rf'"registration_id":"{_ENTITY}","module_id":"{_REF}",'
    rf'"is_correct":(true|false),"interaction_end_time":"{_TIME}"'
    rf'(?:,"goal_id":"{_ENTITY}")?\}}'
)

# Bound once: the hot path calls them per record.
_new: Final = object.__new__
_set: Final = object.__setattr__
_fromisoformat: Final = datetime.fromisoformat

_TIMESTAMP: Final[TypeAdapter[datetime]] = TypeAdapter(Timestamp)
#: offset text ("Z", "+02:00") -> pydantic's tzinfo for it, None if pydantic
#: refuses the offset. At most 20,001 spellings match the pattern.
_TZINFOS: dict[str, tzinfo | None] = {}


def _check_model() -> None:
    # The fast path builds instances the way model_construct does for a plain
    # model; a new field, a validator, a post-init hook or private attributes
    # would make them differ from pydantic's, so refuse to import rather than
    # drift. (The field types it mirrors are pinned by its tests.)
    fields = tuple(AttemptGraded.model_fields)
    if fields != _FIELDS:
        raise RuntimeError(
            f"schemas.event_codec mirrors AttemptGraded's fields {_FIELDS}, "
            f"but the model has {fields}: update the fast path"
        )
    hooks = AttemptGraded.__pydantic_decorators__
    if (
        AttemptGraded.__pydantic_post_init__
        or AttemptGraded.__private_attributes__
        or hooks.model_validators
        or hooks.field_validators
        or hooks.validators
        or hooks.root_validators
    ):
        raise RuntimeError(
            "schemas.event_codec cannot build AttemptGraded with validators, "
            "a post-init hook or private attributes: update the fast path"
        )


_check_model()


def _tzinfo(offset: str) -> tzinfo | None:
    if offset in _TZINFOS:
        return _TZINFOS[offset]
    try:
        tz = _TIMESTAMP.validate_python(f"2000-06-15T12:00:00{offset}").tzinfo
    except ValidationError:
        tz = None
    _TZINFOS[offset] = tz
    return tz


def _aware(local: str, offset: str) -> datetime | None:
    tz = _tzinfo(offset)
    if tz is None:
        return None
    try:
        naive = _fromisoformat(local)
    except ValueError:  # no such date (2026-02-30, year 0)
        return None
    # The documented way, not pickle's faster private constructor: the
    # difference (~0.2 µs) is not worth depending on an undocumented API.
    return naive.replace(tzinfo=tz)


def fast_attempt(data: bytes) -> AttemptGraded | None:
    """The AttemptGraded that pydantic would decode from ``data``, or None when
    ``data`` is not an attempt in encode_event's spelling (or not valid): then
    only :func:`schemas.events.decode_event` may decide."""
    # latin-1 maps every byte to one character; the pattern admits ASCII
    # only, so a byte above 0x7F (UTF-8 or not) fails the match.
    match = _ATTEMPT.fullmatch(data.decode("latin-1"))
    if match is None:
        return None
    (
        event_id,
        occurred_local,
        occurred_offset,
        attempt_id,
        registration_id,
        module_id,
        is_correct,
        ended_local,
        ended_offset,
        goal_id,
    ) = match.groups()
    occurred_at = _aware(occurred_local, occurred_offset)
    if occurred_local == ended_local and occurred_offset == ended_offset:
        ended_at = occurred_at
    else:
        ended_at = _aware(ended_local, ended_offset)
    if occurred_at is None or ended_at is None:
        return None
    # What model_construct sets for a model without extras or private state.
    event = _new(AttemptGraded)
    _set(
        event,
        "__dict__",
        {
            "schema_version": 1,
            "event_id": event_id,
            "occurred_at": occurred_at,
            "type": "AttemptGraded",
            "attempt_id": attempt_id,
            "registration_id": registration_id,
            "module_id": module_id,
            "is_correct": is_correct == "true",
            "interaction_end_time": ended_at,
            "goal_id": goal_id,
        },
    )
    _set(
        event,
        "__pydantic_fields_set__",
        set(_SET_WITHOUT_GOAL if goal_id is None else _SET_WITH_GOAL),
    )
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


def decode_fast(data: bytes) -> Event:
    """:func:`schemas.events.decode_event`, with :func:`fast_attempt` first
    (same results, same ValidationError for invalid records)."""
    event = fast_attempt(data)
    return decode_event(data) if event is None else event
