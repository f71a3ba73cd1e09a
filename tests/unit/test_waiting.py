"""The tests' waits say what they awaited and what they last saw."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.waiting import holds_for, wait_for, wait_for_async


def test_wait_for_returns_the_first_truthy_value() -> None:
    values = iter([0, None, [], 7, 8])
    assert wait_for(lambda: next(values), timeout_s=5, what="7", interval_s=0) == 7


def test_wait_for_names_what_it_awaited_and_the_last_value() -> None:
    polls = itertools.count()
    started = time.monotonic()
    with pytest.raises(AssertionError) as failed:
        wait_for(
            lambda: [] if next(polls) >= 0 else [1],
            timeout_s=0.2,
            what="the rows",
            interval_s=0.01,
        )
    assert time.monotonic() - started < 2
    assert next(polls) > 2  # it looked again and again
    assert "0.2 s for the rows; last seen: []" in str(failed.value)


def test_a_long_last_value_is_cut_and_counted() -> None:
    problems = [f"reg-{i}: wrong row" for i in range(1000)]
    with pytest.raises(AssertionError) as failed:
        wait_for(lambda: problems, accept=lambda p: p == [], timeout_s=0, what="rows")
    message = str(failed.value)
    assert "last seen: 1000 items: ['reg-0: wrong row'" in message
    assert len(message) < 2200 and "chars)" in message


def test_wait_for_retries_the_errors_it_is_told_to() -> None:
    calls = iter([OSError("refused"), OSError("refused"), "up"])

    def probe() -> str:
        value = next(calls)
        if isinstance(value, OSError):
            raise value
        return value

    assert (
        wait_for(probe, timeout_s=5, what="up", interval_s=0, retry_on=(OSError,))
        == "up"
    )
    with pytest.raises(AssertionError, match="last seen: OSError"):
        wait_for(
            probe_down,
            timeout_s=0.05,
            what="up",
            interval_s=0.01,
            retry_on=(OSError,),
        )
    with pytest.raises(ValueError):  # not listed: raised at once
        wait_for(lambda: int("x"), timeout_s=5, what="a number", retry_on=(OSError,))


def probe_down() -> str:
    raise OSError("refused")


def test_wait_for_async_awaits_the_condition() -> None:
    async def go() -> None:
        event = asyncio.Event()
        asyncio.get_running_loop().call_soon(event.set)

        async def is_set() -> bool:
            return event.is_set()

        assert await wait_for_async(is_set, timeout_s=5, what="the event")
        with pytest.raises(AssertionError, match=r"waited 0\.05 s for never"):

            async def never() -> int:
                return 0

            await wait_for_async(never, timeout_s=0.05, what="never")

    asyncio.run(go())


def test_holds_for_fails_at_the_first_look_that_breaks_it() -> None:
    looks = iter([True, True, False, True])
    with pytest.raises(AssertionError, match="one row stopped holding; seen: False"):
        holds_for(lambda: next(looks), window_s=5, what="one row", interval_s=0)
    started = time.monotonic()
    holds_for(lambda: True, window_s=0.1, what="always", interval_s=0.01)
    assert time.monotonic() - started >= 0.1
