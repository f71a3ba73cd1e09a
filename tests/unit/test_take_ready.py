"""take_ready: batches start on their first record (Faust's take_events waits
its whole window after every batch that is not full), and their acks are the
caller's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest

from app.worker.faust_corrections.streams import take_ready
from tests.waiting import wait_for_async


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
    async def check() -> object:
        return condition()

    await wait_for_async(
        check,
        timeout_s=timeout,
        interval_s=0.001,
        what="take_ready to hand over the batches awaited",
    )


async def test_a_batch_is_handed_over_when_what_arrived_is_in_it(
    channel_stream: tuple[Any, Any],
) -> None:
    channel, stream = channel_stream
    batches: list[list[Any]] = []
    task = _consume(stream, 100, 3600.0, batches)  # a window never reached
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


async def test_events_are_acked_by_the_caller_not_by_the_batching(
    channel_stream: tuple[Any, Any],
) -> None:
    channel, stream = channel_stream
    batches: list[list[Any]] = []
    task = _consume(stream, 100, 3600.0, batches)
    for i in range(3):
        await channel.send(value=i)
    await _until(lambda: batches)
    for i in range(3):
        await channel.send(value=i)
    await _until(lambda: len(batches) == 2)
    # Faust's take_events would have acked the first batch by now.
    assert not any(e.message.acked for b in batches for e in b)
    for event in batches[0]:
        event.ack()
    assert all(e.message.acked for e in batches[0])
    task.cancel()


async def test_closing_the_batches_stops_collecting_and_restores_acks(
    channel_stream: tuple[Any, Any],
) -> None:
    channel, stream = channel_stream
    batches = take_ready(stream, 100, 3600.0)
    await channel.send(value=0)
    first = await anext(batches)
    assert [e.value for e in first] == [0]
    assert stream.enable_acks is False
    collectors = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "collect"]
    assert len(collectors) == 1 and not collectors[0].done()
    await batches.aclose()
    assert stream.enable_acks is True
    assert collectors[0].done()  # nobody iterates the stream any more


async def test_an_error_of_the_stream_reaches_the_caller(
    channel_stream: tuple[Any, Any],
) -> None:
    channel, stream = channel_stream

    def fail(value: Any) -> Any:
        raise RuntimeError(f"cannot take {value}")

    stream.add_processor(fail)
    batches = take_ready(stream, 100, 3600.0)
    await channel.send(value=7)
    with pytest.raises(RuntimeError, match="cannot take 7"):
        await asyncio.wait_for(anext(batches), 5.0)
