"""Pure parts of the live dashboard: key parsing, ETags, stream limits and a
subscription's bounded queue (no I/O)."""

from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot

from api.change_hub import Change, Subscription, parse_stream_id
from api.errors import TooManyRequests
from api.etag import held_version, page_response, request_basis
from api.stream import StreamLimits
from infra.read_model import ReadModelKeys
from infra.read_model.scripts import history_keys, page_keys, view_keys

KEYS = ReadModelKeys()


def test_what_one_page_reads_shares_one_slot() -> None:
    """Every key a learning instance's reads name (infra/read_model/scripts.py)
    hashes to one Redis Cluster slot, generation by generation; the lookups
    by another id do not carry the LI's tag."""
    for keys in (KEYS, KEYS.in_generation(7)):
        li_keys = [
            *page_keys(keys, "li-1", ["goal.a~b", "g2"]),
            *page_keys(keys, "li-1", ["g2"], "reg-1"),
            *history_keys(keys, "li-1", "reg-1", "g2"),
            *view_keys(keys, "li-1"),
            keys.learner_registrations("li-1"),
            keys.row("li-1", "reg-1", "g2"),
            keys.history("li-1", "reg-9", "g2"),
        ]
        assert {key_slot(k.encode()) for k in li_keys} == {key_slot(b"li-1")}
        assert key_slot(keys.learners("li-2").encode()) == key_slot(b"li-2")
    # The deployment's keys: one slot (a worker MGETs two of them,
    # mastery broker-reset writes two in one MULTI/EXEC).
    assert {key_slot(k.encode()) for k in KEYS.deployment_keys()} == {key_slot(b"ms")}
    for lookup in (KEYS.registration("reg-1"), KEYS.goal("g1"), KEYS.materialized()):
        assert "{" not in lookup
    assert KEYS.parse_registration(KEYS.registration("reg-1")) == "reg-1"
    assert KEYS.parse_learning_instance(KEYS.learning_instance("li-1")) == "li-1"
    for other in (KEYS.learners("li-1"), KEYS.changes("li-1"), KEYS.goal("g")):
        assert KEYS.parse_registration(other) is None
        assert KEYS.parse_learning_instance(other) is None


VERSION = "0123456789abcdef0123456789abcdef01234567"  # 40 hex digits


@pytest.mark.parametrize(
    ("header", "held"),
    [
        (None, ""),
        ("", ""),
        ("*", "*"),
        ("{tag}", VERSION),
        ("W/{tag}", VERSION),
        ('"other", {tag}', VERSION),
        ('"other"', ""),
        ("{tag}x", ""),
        ("{other_request}", ""),  # a tag of another request: no version
    ],
)
def test_the_version_a_client_holds_is_read_from_if_none_match(
    header: str | None, held: str
) -> None:
    basis = request_basis("/learning-instances/li-1/x", b'{"goal_ids":["g"]}')
    other = request_basis("/learning-instances/li-2/x", b'{"goal_ids":["g"]}')
    response = page_response(VERSION, basis, b"{}")
    tag = response.headers["etag"]
    other_request = page_response(VERSION, other, b"{}").headers["etag"]
    value = (
        None if header is None else header.format(tag=tag, other_request=other_request)
    )
    assert held_version(value, basis) == held


def test_a_page_tag_names_the_version_and_the_request() -> None:
    basis = request_basis("/p", b"{}")
    assert len(basis) == 16
    assert basis == request_basis("/p", b"{}")
    assert basis != request_basis("/q", b"{}") != request_basis("/p", b"{ }")
    ok = page_response(VERSION, basis, b"{}")
    assert ok.status_code == 200 and ok.body == b"{}"
    assert ok.headers["etag"] == f'"{VERSION}{basis}"'
    assert ok.headers["cache-control"] == "private, no-cache"
    same = page_response(VERSION, basis, None)
    assert same.status_code == 304 and same.body == b""
    assert same.headers["etag"] == ok.headers["etag"]


def test_limits_per_token_and_in_total() -> None:
    limits = StreamLimits(per_token=2, total=3)
    a1, a2 = limits.acquire("a"), limits.acquire("a")
    with pytest.raises(TooManyRequests) as exc:
        limits.acquire("a")
    assert exc.value.details["scope"] == "token"
    assert exc.value.headers["Retry-After"]
    b1 = limits.acquire("b")
    with pytest.raises(TooManyRequests) as exc:
        limits.acquire("c")
    assert exc.value.details["scope"] == "server"
    a1()
    a1()  # releasing twice frees one slot only
    assert limits.open == 2
    limits.acquire("c")
    with pytest.raises(TooManyRequests):
        limits.acquire("d")
    a2()
    b1()
    assert limits.open == 1


def _change(n: int, reg: str = "r1", goal: str = "g1") -> Change:
    return Change(f"100-{n}", reg, goal, b"{}")


async def _drain(sub: Subscription) -> list[str]:
    return [c.id for batch in [b async for b in sub.batches()] for c in batch]


async def _take(sub: Subscription, n: int) -> list[str]:
    got: list[str] = []
    batches = sub.batches()
    while len(got) < n:
        batch = await asyncio.wait_for(anext(batches), 1)
        got += [c.id for c in batch]
    return got


async def test_subscription_filters_and_skips_what_it_has() -> None:
    sub = Subscription("li", "100-2", frozenset({"g1"}), "r1", maxsize=10)
    sub.backlog = [_change(3)]
    for change in [_change(2), _change(4), _change(5, goal="g2"), _change(6, "r2")]:
        sub.offer(change)
    sub.offer(_change(7))
    assert await _take(sub, 3) == ["100-3", "100-4", "100-7"]
    assert not sub.dropped


async def test_a_full_queue_drops_the_subscriber_and_frees_it() -> None:
    sub = Subscription("li", "0-0", frozenset({"g1"}), None, maxsize=3)
    for n in range(1, 4):
        sub.offer(_change(n))
    assert not sub.dropped
    sub.offer(_change(4))
    assert sub.dropped and sub.ended
    sub.offer(_change(5))  # ignored after the end
    # What was queued is discarded at once: the consumer sees only the end.
    assert await asyncio.wait_for(_drain(sub), 1) == []


def test_stream_ids_parse_and_order() -> None:
    assert parse_stream_id("1700000000000-12") == (1700000000000, 12)
    assert parse_stream_id("0-0") == (0, 0)
    for bad in ("", "12", "a-1", "1-2-3", "-1-2", "1 -2"):
        assert parse_stream_id(bad) is None
    assert parse_stream_id("9-0") < parse_stream_id("10-0")  # type: ignore[operator]


def test_limits_per_partner() -> None:
    limits = StreamLimits(per_token=2, total=10, per_partner=3)
    held = [limits.acquire(f"p1\x00t{i}", "p1") for i in range(3)]
    with pytest.raises(TooManyRequests) as exc:
        limits.acquire("p1\x00t9", "p1")
    assert exc.value.details == {"limit": 3, "scope": "partner"}
    limits.acquire("p2\x00t0", "p2")  # another partner is unaffected
    held[0]()
    limits.acquire("p1\x00t9", "p1")
