"""Waiting in tests: on a condition, with a deadline of its own.

A test that sleeps either waits too long or, on a loaded machine, not long
enough. These poll a condition instead and fail with what was awaited and the
last value seen. They import nothing of ours, so unit tests use them too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["holds_for", "wait_for", "wait_for_async"]

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    accept: Callable[[T], object] = bool,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``condition`` until ``accept`` finds its value good (by default:
    truthy), and return that value.

    An exception in ``retry_on`` counts as "not yet" (a server still starting).
    Fails after ``timeout_s`` naming ``what`` and the last value or error."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value: T | BaseException = condition()
        except retry_on as exc:
            value = exc
        if not isinstance(value, BaseException) and accept(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(timeout_s, what, value))
        time.sleep(interval_s)


async def wait_for_async(
    condition: Callable[[], Awaitable[T]],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
) -> T:
    """:func:`wait_for` on the event loop: awaits ``condition()`` until truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(timeout_s, what, value))
        await asyncio.sleep(interval_s)


def holds_for(
    condition: Callable[[], object],
    *,
    window_s: float,
    what: str,
    interval_s: float = 0.1,
) -> None:
    """Check that ``condition`` stays truthy for a whole observation window.

    For "nothing else happens" where no later event shows that the system has
    gone past the point: the window is a named, bounded bet, and the test
    fails at the first look that finds ``what`` broken."""
    deadline = time.monotonic() + window_s
    while True:
        value = condition()
        assert value, f"{what} stopped holding; seen: {_shown(value)}"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval_s)


def _timed_out(timeout_s: float, what: str, value: object) -> str:
    return f"waited {timeout_s:g} s for {what}; last seen: {_shown(value)}"


def _shown(value: object, limit: int = 2000) -> str:
    text = repr(value)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} chars)"
    if isinstance(value, list | tuple | set | dict) and len(value) > 1:
        text = f"{len(value)} items: {text}"
    return text
