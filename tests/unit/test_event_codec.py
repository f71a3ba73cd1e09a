"""The fast decode of attempts (schemas/event_codec.py) is pydantic's decode.

For any record, ``fast_attempt`` either returns a model equal in every
observable way to what ``decode_event`` returns, or defers; ``decode_fast``
(and so the worker's ``processors.batch.decode``) accepts exactly what
``decode_event`` accepts, with equal models and equal errors. Records come
from hypothesis: valid attempts from strategies for every field, then
mutations (wrong types, missing and extra keys, bad ids and timestamps,
duplicate keys, escapes, whitespace, non-UTF-8 bytes, byte flips).
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError

import schemas.event_codec
import schemas.events
from processors.batch import Record, decode
from schemas.event_codec import decode_fast, fast_attempt
from schemas.events import (
    AttemptGraded,
    EntityId,
    RefId,
    RegistrationCreated,
    Timestamp,
    decode_event,
    encode_event,
)

TOPIC = "t.registration-events.v1"
KEY = b"reg-1"
ATTEMPT: dict[str, Any] = {
    "schema_version": 1,
    "event_id": "e-1",
    "occurred_at": "2026-09-01T08:00:03Z",
    "type": "AttemptGraded",
    "attempt_id": "a-1",
    "registration_id": "reg-1",
    "module_id": "https://example.org/items/7",
    "is_correct": True,
    "interaction_end_time": "2026-09-01T08:00:03.250+02:00",
}
PROPERTY = settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- comparing a fast result with pydantic's ---------------------------------


def assert_same_model(got: BaseModel, want: BaseModel) -> None:
    """Equal in everything code can observe, not only ``==``."""
    assert type(got) is type(want)
    assert got == want
    assert list(got.__dict__.items()) == list(want.__dict__.items())
    assert got.model_fields_set == want.model_fields_set
    assert type(got.model_fields_set) is type(want.model_fields_set)
    assert got.__pydantic_extra__ == want.__pydantic_extra__
    assert got.__pydantic_private__ == want.__pydantic_private__
    assert got.model_dump() == want.model_dump()
    assert got.model_dump_json() == want.model_dump_json()
    assert encode_event(got) == encode_event(want)
    assert repr(got) == repr(want)
    for name, value in want.__dict__.items():
        other = got.__dict__[name]
        assert type(other) is type(value), name
        if isinstance(value, datetime):
            assert type(other.tzinfo) is type(value.tzinfo), name
            assert other.utcoffset() == value.utcoffset(), name
            assert (other.isoformat(), other.fold) == (value.isoformat(), value.fold)
    try:
        want_hash = hash(want)
    except OverflowError:  # year 1 or 9999 with an offset: no UTC value
        with pytest.raises(OverflowError):
            hash(got)
    else:
        assert hash(got) == want_hash
    with pytest.raises(ValidationError, match="frozen"):
        got.module_id = "changed"  # type: ignore[misc]


def agree(raw: bytes) -> AttemptGraded | None:
    """Check the fast path against pydantic on ``raw``; its result."""
    want: BaseModel | None = None
    want_error: ValidationError | None = None
    try:
        want = decode_event(raw)
    except ValidationError as exc:
        want_error = exc

    fast = fast_attempt(raw)
    if fast is not None:
        assert want is not None, f"fast path accepted what pydantic refuses: {raw!r}"
        assert_same_model(fast, want)

    try:
        combined = decode_fast(raw)
    except ValidationError as exc:
        assert want_error is not None, f"pydantic accepts {raw!r}"
        assert str(exc) == str(want_error)
        # repr: the inputs may hold NaN, the contexts exception instances
        assert repr(exc.errors()) == repr(want_error.errors())
    else:
        assert want is not None, f"pydantic refuses {raw!r}: {want_error}"
        assert_same_model(combined, want)

    # The worker's decode, both ways: same events, same dead-letter reasons.
    record = Record(TOPIC, 0, 7, KEY, raw)
    ours, ours_rejected = decode([record])
    theirs, theirs_rejected = decode([record], decoder=decode_event)
    assert [r.reason for r in ours_rejected] == [r.reason for r in theirs_rejected]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert_same_model(a.event, b.event)
    return fast


# -- strategies ---------------------------------------------------------------

ENTITY_CHARS = string.ascii_letters + string.digits + "._~-"
#: printable ASCII that JSON writes without an escape
PLAIN_ASCII = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"\\')

valid_entity_ids = st.one_of(
    st.text(ENTITY_CHARS, min_size=1, max_size=40),
    st.sampled_from(["x" * 128, "-", "~", ".", "_", "0"]),
)
entity_ids = st.one_of(
    valid_entity_ids,
    st.sampled_from(["x" * 129, "", "a b", "a/b", "\u00e9"]),
    st.text(max_size=10),  # anything: spaces, unicode, controls
)
valid_module_ids = st.one_of(
    st.text(PLAIN_ASCII, min_size=1, max_size=60),
    st.sampled_from(["m" * 512, 'a"b', "a\\b", "lo-\u00e9t\u00e9", "\u4e2d"]),
)
module_ids = st.one_of(
    valid_module_ids,
    st.sampled_from(
        [
            "m" * 513,
            "",
            "a b",
            "a\tb",
            "a\u00a0b",  # no-break space: whitespace for both regex engines
            "a\u200bb",  # zero-width space: format character
            "a\u2028b",
            "a\u180eb",
            "\U0001d173",
            "\x00",
            "\x7f",
        ]
    ),
    st.text(min_size=1, max_size=12),
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """RFC 3339-ish texts, mostly valid, with every part sometimes out of range."""
    year = draw(st.one_of(st.integers(1, 9999), st.sampled_from([0, 1, 9999])))
    month = draw(st.integers(0, 13))
    day = draw(st.integers(0, 32))
    hour = draw(st.integers(0, 25))
    minute = draw(st.integers(0, 61))
    second = draw(st.integers(0, 61))
    fraction = draw(
        st.one_of(st.just(""), st.text("0123456789", min_size=0, max_size=11))
    )
    sep = draw(st.sampled_from("TTTTt "))
    offset = draw(
        st.one_of(
            st.sampled_from(["Z", "Z", "z", "+00:00", "-00:00", "", "+2", "+0200"]),
            st.builds(
                "{}{:02d}:{:02d}".format,
                st.sampled_from("+-"),
                st.integers(0, 25),
                st.integers(0, 61),
            ),
        )
    )
    dot = "." if fraction or draw(st.booleans()) else ""
    return (
        f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:"
        f"{second:02d}{dot}{fraction}{offset}"
    )


#: valid (and near valid) timestamps more often than the general strategy
valid_timestamps = st.builds(
    lambda dt, digits, off: (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T"
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
        + (f".{dt.microsecond:06d}{'0' * 3}"[: digits + 1] if digits else "")
        + off
    ),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    st.integers(0, 9),
    st.sampled_from(["Z", "+00:00", "-00:00", "+02:00", "-05:30", "+23:59", "+14:00"]),
)


@st.composite
def attempts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid AttemptGraded as a JSON object in encode_event's key order."""
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": draw(valid_entity_ids),
        "occurred_at": draw(valid_timestamps),
        "type": "AttemptGraded",
        "attempt_id": draw(valid_entity_ids),
        "registration_id": draw(st.sampled_from(["reg-1", "reg-1", "reg-2"])),
        "module_id": draw(valid_module_ids),
        "is_correct": draw(st.booleans()),
    }
    occurred = event["occurred_at"]
    event["interaction_end_time"] = draw(st.one_of(st.just(occurred), valid_timestamps))
    if draw(st.booleans()):
        event["goal_id"] = draw(valid_entity_ids)
    return event


#: per field, near misses as well as valid values
NEAR_MISSES: dict[str, st.SearchStrategy[Any]] = {
    "event_id": entity_ids,
    "attempt_id": entity_ids,
    "registration_id": entity_ids,
    "goal_id": entity_ids,
    "module_id": module_ids,
    "occurred_at": timestamps(),
    "interaction_end_time": timestamps(),
}


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),  # orjson writes no larger; see odd_numbers
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [0, 1, 2, 1.0, "1", "no", "yes", "true", "True", 1_788_249_603, 1.5e9]
    ),
    st.sampled_from(["1788249603", "2026-09-01", "2026-09-01T08:00:03"]),
    st.lists(st.integers(-9, 9), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=2),
)
#: raw JSON texts orjson would not write
odd_numbers = st.sampled_from(
    [
        *(b"NaN", b"Infinity", b"-Infinity", b"1e999", b"1e400", b"-0", b"1.0"),
        *(b"01", b"1" * 40, b"true ", b"True", b"null"),
    ]
)


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """encode_event's spelling of a valid attempt, then (mostly) a mutation."""
    event = draw(attempts())
    keys = list(event)
    kind = draw(
        st.sampled_from(
            [
                "none",
                "none",
                "near miss",
                "near miss",
                "near miss",
                "near miss",
                "value",
                "drop",
                "extra",
                "order",
                "whitespace",
                "duplicate",
                "odd number",
                "escape",
                "case",
                "goal null",
                "registration",
                "bytes",
                "truncate",
                "not an object",
            ]
        )
    )
    if kind == "near miss":
        for name in draw(st.lists(st.sampled_from(list(NEAR_MISSES)), min_size=1)):
            event[name] = draw(NEAR_MISSES[name])
    elif kind == "value":
        event[draw(st.sampled_from(keys))] = draw(json_values)
    elif kind == "drop":
        del event[draw(st.sampled_from(keys))]
    elif kind == "extra":
        name = draw(st.one_of(st.sampled_from(["extra", "goal", "Type"]), st.text()))
        event[name] = draw(json_values)
    elif kind == "order":
        order = draw(st.permutations(keys))
        event = {k: event[k] for k in order}
    elif kind == "goal null":
        event["goal_id"] = None
    elif kind == "registration":
        event = {
            "schema_version": 1,
            "event_id": event["event_id"],
            "occurred_at": event["occurred_at"],
            "type": "RegistrationCreated",
            "registration_id": event["registration_id"],
            "learning_instance_id": event["attempt_id"],
            "user_id": "u-1",
            "role": draw(st.sampled_from(["learner", "instructor", "admin"])),
        }
    elif kind == "not an object":
        return orjson.dumps(draw(st.one_of(json_values, st.just(list(event)))))
    raw = orjson.dumps(event)
    if kind == "whitespace":
        raw = orjson.dumps(event, option=orjson.OPT_INDENT_2)
        if draw(st.booleans()):
            raw = b" " + raw.replace(b'":', b'" :') + b"\n"
    elif kind == "duplicate":
        key = draw(st.sampled_from(keys))
        value = orjson.dumps(draw(st.one_of(json_values, st.just(event[key]))))
        dup = b'"' + key.encode() + b'":' + value
        raw = (
            b"{" + dup + b"," + raw[1:]
            if draw(st.booleans())
            else raw[:-1] + b"," + dup + b"}"
        )
    elif kind == "odd number":
        key = draw(st.sampled_from(keys)).encode()
        start = raw.index(b'"' + key + b'":') + len(key) + 3
        end = start + len(orjson.dumps(event[key.decode()]))
        raw = raw[:start] + draw(odd_numbers) + raw[end:]
    elif kind == "escape":
        # The same id with one character spelled as a \\u escape: pydantic
        # reads the same string, the fast path must defer.
        key = draw(st.sampled_from(["event_id", "attempt_id", "module_id"]))
        value = str(event[key])
        if value:
            units = value[0].encode("utf-16-be")  # a surrogate pair if astral
            escaped = "".join(
                f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)
            )
            escaped += orjson.dumps(value[1:])[1:-1].decode()
            raw = raw.replace(orjson.dumps(value), f'"{escaped}"'.encode(), 1)
    elif kind == "case":
        raw = (
            raw.replace(b"T", b"t", 1)
            if draw(st.booleans())
            else raw.replace(b'Z"', b'z"', 1)
        )
    elif kind == "bytes":
        at = draw(st.integers(0, len(raw)))
        cut = draw(st.integers(0, 3))
        junk = draw(
            st.one_of(
                st.binary(min_size=1, max_size=3),
                st.sampled_from(
                    [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe9", b"\x00"]
                ),
            )
        )
        raw = raw[:at] + junk + raw[at + cut :]
    elif kind == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    return raw


# -- properties ---------------------------------------------------------------


@PROPERTY
@given(records())
@example(orjson.dumps(ATTEMPT))
@example(orjson.dumps({**ATTEMPT, "is_correct": 1}))
@example(orjson.dumps({**ATTEMPT, "is_correct": "no"}))
@example(orjson.dumps({**ATTEMPT, "occurred_at": 1_788_249_603}))
@example(orjson.dumps(ATTEMPT).replace(b'"is_correct":true', b'"is_correct":NaN'))
@example(
    orjson.dumps(ATTEMPT).replace(b'"schema_version":1', b'"schema_version":1e999')
)
@example(orjson.dumps(ATTEMPT)[:-1] + b',"event_id":"e-2"}')
@example(orjson.dumps(ATTEMPT)[:-1] + b',"is_correct":false}')
@example(orjson.dumps(ATTEMPT).replace(b"e-1", b"e-\xff"))
@example(b"")
@example(b"\xef\xbb\xbf" + orjson.dumps(ATTEMPT))
def test_decode_fast_equals_pydantic_or_defers(raw: bytes) -> None:
    agree(raw)


@PROPERTY
@given(attempts(), st.data())
def test_one_field_off_the_rules(event: dict[str, Any], data: st.DataObject) -> None:
    # Everything else valid and in encode_event's spelling, so the fast path's
    # pattern decides on this one field alone.
    name = data.draw(st.sampled_from(list(NEAR_MISSES)))
    event[name] = data.draw(NEAR_MISSES[name])
    agree(orjson.dumps(event))


@PROPERTY
@given(
    st.builds(
        AttemptGraded,
        event_id=st.text(ENTITY_CHARS, min_size=1, max_size=128),
        occurred_at=st.datetimes(
            min_value=datetime(1, 1, 2),
            max_value=datetime(9999, 12, 30),
            timezones=st.builds(
                timezone,
                st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
                    lambda m: timedelta(minutes=m)
                ),
            ),
        ),
        attempt_id=st.text(ENTITY_CHARS, min_size=1, max_size=128),
        registration_id=st.just("reg-1"),
        module_id=st.text(PLAIN_ASCII, min_size=1, max_size=512),
        is_correct=st.booleans(),
        interaction_end_time=st.datetimes(timezones=st.just(UTC)),
        goal_id=st.none() | st.text(ENTITY_CHARS, min_size=1, max_size=128),
    )
)
def test_the_fast_path_takes_every_attempt_encode_event_writes(
    event: AttemptGraded,
) -> None:
    # Every valid attempt with a printable ASCII module id, as our producers
    # write it, decodes on the fast path: it cannot silently always defer.
    raw = encode_event(event)
    assert agree(raw) is not None, raw


def test_the_worker_decode_takes_the_fast_path_for_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = RegistrationCreated(
        event_id="e-0",
        occurred_at=datetime(2026, 9, 1, 8, tzinfo=UTC),
        registration_id="reg-1",
        learning_instance_id="li-1",
        user_id="u-1",
        role="learner",
    )
    values = [encode_event(created)]
    for i in range(200):
        values.append(
            orjson.dumps(
                {
                    **ATTEMPT,
                    "event_id": f"e-{i}",
                    "attempt_id": f"a-{i}",
                    "is_correct": i % 3 == 0,
                    "occurred_at": f"2026-09-01T08:{i // 60:02d}:{i % 60:02d}.{i:03d}Z",
                }
            )
        )
    values.append(orjson.dumps({**ATTEMPT, "is_correct": "yes"}))  # dead letter
    batch = [Record(TOPIC, 0, n, KEY, v) for n, v in enumerate(values)]

    slow_calls: list[bytes] = []

    def counted(data: bytes | str) -> Any:
        slow_calls.append(data if isinstance(data, bytes) else data.encode())
        return decode_event(data)

    monkeypatch.setattr(schemas.event_codec, "decode_event", counted)
    decoded, rejected = decode(batch)

    # Only the registration and the invalid attempt went to pydantic.
    assert slow_calls == [values[0], values[-1]]
    assert len(decoded) == 201 and len(rejected) == 1
    assert "is_correct" in rejected[0].reason
    monkeypatch.undo()
    want, want_rejected = decode(batch, decoder=decode_event)
    assert [r.reason for r in rejected] == [r.reason for r in want_rejected]
    for a, b in zip(decoded, want, strict=True):
        assert_same_model(a.event, b.event)


def _with(**fields: Any) -> bytes:
    return orjson.dumps({**ATTEMPT, **fields})


@pytest.mark.parametrize(
    ("raw", "fast"),
    [
        (orjson.dumps(ATTEMPT), True),
        (_with(goal_id="g-1"), True),
        (_with(event_id="x" * 128, module_id="m" * 512), True),
        (_with(occurred_at="2024-02-29T08:00:03.123456789Z"), True),
        (_with(occurred_at="0001-01-01T00:00:00-23:59"), True),
        (_with(occurred_at="9999-12-31T23:59:59.9+23:59"), True),
        (_with(occurred_at="2026-09-01T08:00:03-00:00"), True),
        # valid, but not encode_event's spelling: pydantic's path
        (_with(module_id="lo-\u00e9t\u00e9"), False),
        (_with(module_id='a"b'), False),
        (_with(goal_id=None), False),
        (
            orjson.dumps({k: v for k, v in ATTEMPT.items() if k != "schema_version"}),
            False,
        ),
        (orjson.dumps(ATTEMPT, option=orjson.OPT_INDENT_2), False),
        (_with(occurred_at="2026-09-01t08:00:03Z"), False),
        (orjson.dumps(ATTEMPT).replace(b'"e-1"', b'"\\u0065-1"'), False),
        # invalid: pydantic's path, which refuses them
        (_with(event_id="x" * 129), False),
        (_with(event_id="a/b"), False),
        (_with(module_id="m" * 513), False),
        (_with(module_id="a b"), False),
        (_with(module_id="a\x1fb"), False),
        (_with(module_id="a\x7fb"), False),
        # raw (unescaped) control bytes in the JSON text: JSON refuses 0x1F,
        # allows 0x7F (which RefId refuses)
        (orjson.dumps(ATTEMPT).replace(b"items/7", b"items/\x1f7"), False),
        (orjson.dumps(ATTEMPT).replace(b"items/7", b"items/\x7f7"), False),
        (orjson.dumps(ATTEMPT).replace(b"items/7", b"items/\t7"), False),
        (_with(module_id=""), False),
        (_with(occurred_at="2026-09-01T24:00:00Z"), False),
        (_with(occurred_at="2026-09-01T08:60:00Z"), False),
        (_with(occurred_at="2026-09-01T08:00:60Z"), False),
        (_with(occurred_at="2026-09-01T08:00:03+24:00"), False),
        (_with(occurred_at="2026-09-01T08:00:03+05:60"), False),
        (_with(occurred_at="2026-02-29T08:00:03Z"), False),
        (_with(occurred_at="0000-01-01T00:00:00Z"), False),
        (_with(occurred_at="2026-09-01T08:00:03.1234567890Z"), False),
        (_with(occurred_at="2026-09-01T08:00:03.Z"), False),
        (_with(is_correct=1), False),
        (_with(schema_version=2), False),
    ],
)
def test_what_takes_the_fast_path(raw: bytes, fast: bool) -> None:
    # Each rule of the pattern at its edge; agree() checks the outcome too.
    assert (agree(raw) is not None) is fast


class _Pinned(BaseModel):
    """AttemptGraded's fields as the fast path was written for them."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    schema_version: Literal[1] = 1
    event_id: EntityId
    occurred_at: Timestamp
    type: Literal["AttemptGraded"] = "AttemptGraded"
    attempt_id: EntityId
    registration_id: EntityId
    module_id: RefId
    is_correct: StrictBool
    interaction_end_time: Timestamp
    goal_id: EntityId | None = None


def test_the_fast_path_mirrors_the_schema() -> None:
    # The pattern spells out these rules of schemas/events.py; if they change,
    # the fast path must change with them.
    assert {n: repr(f) for n, f in AttemptGraded.model_fields.items()} == {
        n: repr(f) for n, f in _Pinned.model_fields.items()
    }
    assert AttemptGraded.model_config == _Pinned.model_config
    assert schemas.events._RFC3339.pattern == (
        r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
    )
    assert EntityId.__metadata__[0].pattern == r"^[A-Za-z0-9._~-]{1,128}$"
    ref = RefId.__metadata__[0].pattern
    assert ref == rf"^[^\s{schemas.events.CONTROL_OR_FORMAT}]{{1,512}}$"
    assert tuple(AttemptGraded.model_fields) == schemas.event_codec._FIELDS
    assert AttemptGraded.model_config.get("frozen") is True
    assert AttemptGraded.model_config.get("extra") == "forbid"
    # printable ASCII holds no whitespace or control/format character
    assert all(not c.isspace() and c.isprintable() for c in PLAIN_ASCII)


def test_the_fast_path_refuses_to_drift_from_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A field added to AttemptGraded would be missing from the models the
    # fast path builds: the module refuses to load instead.
    monkeypatch.setattr(
        schemas.event_codec, "_FIELDS", (*schemas.event_codec._FIELDS, "new_field")
    )
    with pytest.raises(RuntimeError, match="update the fast path"):
        schemas.event_codec._check_model()
