"""Batches that start on their first record, whose acks are the caller's.

faust-streaming's ``Stream.take_events(max_, within)`` (0.15.x, streams.py)
waits ``within`` seconds after *every* batch that is not full: every record
waits for the rest of the window it landed in (4 ms at the median at 5,000
attempts/s with a 5 ms window, docs/performance.md). It also acks each batch
in a ``finally`` once the caller's loop body returns, so an agent cannot hold
acks back until its states are stored.

:func:`take_ready` hands a batch over as soon as a turn of the event loop
adds nothing more to it (every record fetched so far is in it), when it holds
``max_`` records, or ``within`` seconds after its first record, whichever
comes first; and it acks nothing: the worker acks a batch's events after the
checkpoint that stores their states (app/worker/checkpoint.py). It uses only the
stream's public surface: a task iterates the stream (``async for``, with
``enable_acks`` off) and collects its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from typing import Any

__all__ = ["take_ready"]

#: Turns of the event loop without a new record that end a batch. One turn
#: lets the consumer's delivery loop (which yields every 100 records) and the
#: stream's drainer each run once; two make a batch end only when both are
#: waiting for the broker.
QUIET_TURNS = 2


async def take_ready(
    stream: Any, max_: int, within: float
) -> AsyncGenerator[list[Any], None]:
    """Yield lists of a Faust stream's events (see the module docstring).

    ``stream`` is a ``faust.Stream`` (an agent's stream); ``max_`` bounds a
    batch's size and ``within`` (seconds) how long a batch may keep growing
    after its first record. The events are not acked: ``event.ack()`` each
    once its effects are stored.
    """
    events: list[Any] = []
    arrived = asyncio.Event()  # events holds a record
    room = asyncio.Event()  # events holds fewer than max_
    room.set()

    async def collect() -> None:
        async for _ in stream:
            event = stream.current_event
            if event is None:
                continue
            events.append(event)
            arrived.set()
            if len(events) >= max_:
                room.clear()
                await room.wait()

    enable_acks = stream.enable_acks
    stream.enable_acks = False
    collector = asyncio.ensure_future(collect())
    try:
        while True:
            if not events:
                arrived.clear()
                if not await _arrival(arrived, collector):
                    return  # the stream ended
            deadline = time.monotonic() + within
            quiet = 0
            while quiet < QUIET_TURNS and len(events) < max_:
                if time.monotonic() >= deadline:
                    break
                size = len(events)
                await asyncio.sleep(0)
                quiet = quiet + 1 if len(events) == size else 0
            batch, events = events, []
            room.set()
            yield batch
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        stream.enable_acks = enable_acks


async def _arrival(arrived: asyncio.Event, collector: asyncio.Future[None]) -> bool:
    """Wait for a record: True when one arrived, False when the stream ended
    (raising the error that ended it, if any)."""
    waiter: asyncio.Future[Any] = asyncio.ensure_future(arrived.wait())
    try:
        await asyncio.wait({waiter, collector}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if arrived.is_set():
        return True
    collector.result()  # the error that ended it, if any
    return False
