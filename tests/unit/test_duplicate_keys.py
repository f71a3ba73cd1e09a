"""The duplicate-key refusal of request bodies (api/_http.py): its fast path
(key endings counted against orjson's keys) never lets a repeat through."""

from __future__ import annotations

import orjson
import pytest

from api._http import _refuse_duplicate_keys
from api.errors import BadRequest


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "a": 2}',
        b'{"a" :1, "a"\t:2}',  # blanks before the colon
        b'{"x": {"b": 1, "c": [{"d": 1, "d": 2}]}}',  # nested, in a list
        b'{"k": "x\\":", "a": 1, "a": 2}',  # a value with a key ending
        b'{"a\\"": 1, "a\\"": 2}',  # escaped quotes in the key
        b'[{"a": 1}, {"b": 1, "b": 1}]',
    ],
)
def test_a_repeated_key_is_refused(body: bytes) -> None:
    with pytest.raises(BadRequest, match="repeats the key"):
        _refuse_duplicate_keys(body, orjson.loads(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"goal_ids": ["g1", "g2"], "registrations_per_page": 100}',
        b'{"k": "x\\":", "a": 1}',  # a value with a key ending: slow path, fine
        b'{"a": {"a": {"a": 1}}}',  # the same key in different objects
        b'[{"a": 1}, {"a": 2}]',
        b"[]",
        b'"x\\":"',  # a lone string with a key ending
    ],
)
def test_distinct_keys_pass(body: bytes) -> None:
    _refuse_duplicate_keys(body, orjson.loads(body))


def test_a_body_nested_past_the_recursion_limit_is_a_400() -> None:
    body = b'{"a":' * 1000 + b"1" + b"}" * 1000
    with pytest.raises(BadRequest, match="nests too deeply"):
        _refuse_duplicate_keys(body, orjson.loads(body))
