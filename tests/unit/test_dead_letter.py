"""Dead letters carry the original whole when they can, else a bounded prefix."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from schemas.dead_letter import MAX_ORIGINAL_BYTES, DeadLetter

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _letter(key: bytes | None, value: bytes | None) -> DeadLetter:
    return DeadLetter.of(
        "bad",
        source_topic="t",
        partition=1,
        offset=9,
        key=key,
        value=value,
        rejected_at=NOW,
    )


def test_a_small_record_is_carried_whole() -> None:
    letter = _letter(b"k", b"v" * 100)
    assert (letter.key, letter.value, letter.truncated) == (b"k", b"v" * 100, False)
    assert letter.value_size is None and letter.value_sha256 is None
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


def test_an_oversized_value_or_key_is_carried_as_a_prefix_with_its_digest() -> None:
    value = bytes(range(256)) * (MAX_ORIGINAL_BYTES // 256 + 10)
    letter = _letter(b"k", value)
    assert letter.truncated
    assert letter.value == value[:MAX_ORIGINAL_BYTES]
    assert letter.value_size == len(value)
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    # the serialized letter stays well below a 1 MiB produce request
    assert len(letter.model_dump_json()) < 400 * 1024
    long_key = _letter(b"k" * (MAX_ORIGINAL_BYTES + 1), b"v")
    assert long_key.truncated and len(long_key.key or b"") == MAX_ORIGINAL_BYTES


def test_letters_written_before_the_bound_still_read() -> None:
    old = (
        '{"reason":"r","source_topic":"t","partition":0,"offset":1,'
        '"key_b64":null,"value_b64":"eA==","rejected_at":"2026-01-01T00:00:00Z"}'
    )
    letter = DeadLetter.model_validate_json(old)
    assert letter.value == b"x" and not letter.truncated
