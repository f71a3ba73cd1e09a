"""api.errors.redact_addresses: server addresses out of public error bodies,
everything else (times of day, partition numbers, versions) left as it is."""

from __future__ import annotations

import pytest

from api.errors import redact_addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Timeout reading from 127.0.0.1:38245", "Timeout reading from <address>"),
        (
            "Error 111 connecting to redis:6379. Connection refused.",
            "Error 111 connecting to <address>. Connection refused.",
        ),
        (
            "Unable to bootstrap from [('10.0.0.7', 9092, <AddressFamily.AF_INET: 2>)]",
            "Unable to bootstrap from [(<address>, <AddressFamily.AF_INET: 2>)]",
        ),
        ("cannot reach [::1]:9092 now", "cannot reach <address> now"),
        ("kafka-1.internal:9092,kafka-2:9092", "<address>,<address>"),
        ("10.0.3.7 is down", "<address> is down"),
    ],
)
def test_addresses_are_redacted(text: str, expected: str) -> None:
    assert redact_addresses(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "t.catalog.v1[0] ended at 10, now 0",
        "reported at 2026-12-01T15:54:25.043+00:00 by worker test (pid 1)",
        "version 1.2.3.4.5",
        "no answer within 2 s",
    ],
)
def test_other_text_is_kept(text: str) -> None:
    assert redact_addresses(text) == text
