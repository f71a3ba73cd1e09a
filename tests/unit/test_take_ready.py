"""take_ready: batches start on their first record (Faust's take_events waits
its whole window after every batch that is not full)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest

from app.faust_corrections.streams import take_ready


@pytest.fixture
async def channel_stream() -> AsyncIterator[tuple[Any, Any]]:
    # A local channel: no broker is contacted (the URL only names the
    # transport whose consumer the stream acks through).
    app = faust.App(
        "take-ready-test",
        broker="kafka://127.0.0.1:9",
        loop=asyncio.get_running_loop(),
    )
    app.flow_control.resume()
    channel = app.channel()
    yield channel, app.stream(channel)


def _consume(
    stream: Any, max_: int, within: float, batches: list[list[Any]]
) -> asyncio.Task[None]:
    async def run() -> None:
        async for batch in take_ready(stream, max_, within):
            batches.append(batch)

    return asyncio.ensure_future(run())


async def _until(condition: Any, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


async def test_a_batch_is_handed_over_when_what_arrived_is_in_it(
    channel_stream: tuple[Any, Any],
) -> None:
    channel, stream = channel_stream
    batches: list[list[Any]] = []
    task = _consume(stream, 100, 3600.0, batches)  # a window never reached
    await asyncio.sleep(0.01)
    for i in range(5):
        await channel.send(value=i)
    await _until(lambda: batches)
    assert [e.value for e in batches[0]] == [0, 1, 2, 3, 4]
    for i in range(5, 8):
        await channel.send(value=i)
    await _until(lambda: len(batches) == 2)
    assert [e.value for e in batches[1]] == [5, 6, 7]
    task.cancel()


async def test_max_bounds_a_batch_and_nothing_is_lost_or_reordered(
    channel_stream: tuple[Any, Any],
) -> None:
    channel, stream = channel_stream
    batches: list[list[Any]] = []
    task = _consume(stream, 100, 3600.0, batches)
    await asyncio.sleep(0.01)
    for i in range(250):
        await channel.send(value=i)
    await _until(lambda: sum(map(len, batches)) == 250)
    assert max(len(b) for b in batches) == 100
    assert [e.value for b in batches for e in b] == list(range(250))
    task.cancel()


async def test_within_bounds_a_batch_that_keeps_growing(
    channel_stream: tuple[Any, Any],
) -> None:
    channel, stream = channel_stream
    batches: list[list[Any]] = []
    task = _consume(stream, 10**9, 0.02, batches)
    await asyncio.sleep(0.01)
    sent = 0

    async def every_turn() -> None:  # a record on every turn of the loop
        nonlocal sent
        while True:
            await channel.send(value=sent)
            sent += 1

    sender = asyncio.ensure_future(every_turn())
    await _until(lambda: batches)
    assert not sender.done()  # handed over while records still arrive
    assert 0 < len(batches[0]) < sent
    sender.cancel()
    task.cancel()


async def test_events_are_acked_only_after_their_batch_was_handled(
    channel_stream: tuple[Any, Any],
) -> None:
    channel, stream = channel_stream
    acked_while_handled: list[list[bool]] = []
    batches: list[list[Any]] = []

    async def run() -> None:
        async for batch in take_ready(stream, 100, 3600.0):
            acked_while_handled.append([e.message.acked for e in batch])
            batches.append(batch)

    task = asyncio.ensure_future(run())
    await asyncio.sleep(0.01)
    for i in range(3):
        await channel.send(value=i)
    await _until(lambda: batches)
    for i in range(3):
        await channel.send(value=i)
    await _until(lambda: len(batches) == 2)
    assert acked_while_handled == [[False] * 3, [False] * 3]
    assert all(e.message.acked for e in batches[0])
    task.cancel()
