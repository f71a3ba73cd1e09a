"""The consumer's wait_first: records delivered inline, mode's race only when needed."""

from __future__ import annotations

import asyncio

import pytest

from app.worker.faust_corrections.transport import _Consumer, _resume


def _consumer() -> _Consumer:
    # Only what Service.wait_first and the fast path read.
    consumer = object.__new__(_Consumer)
    consumer.suspend_flow = asyncio.Event()
    consumer._stopped = asyncio.Event()
    consumer._crashed = asyncio.Event()
    consumer.loop = asyncio.get_running_loop()
    return consumer


async def test_a_callback_that_does_not_suspend_runs_inline() -> None:
    consumer = _consumer()
    ran: list[int] = []

    async def deliver() -> str:
        ran.append(1)
        return "delivered"

    loop_turns = 0

    async def count_turns() -> None:
        nonlocal loop_turns
        while True:
            loop_turns += 1
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count_turns())
    await asyncio.sleep(0)
    before = loop_turns
    result = await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    after = loop_turns
    counter.cancel()
    assert ran == [1]
    assert result.results == ["delivered"] and not result.stopped
    assert after == before  # no task, no turn of the loop


async def test_a_suspending_callback_completes_with_its_result() -> None:
    consumer = _consumer()
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(0)  # full: the put below must wait
    blocking = asyncio.Event()

    async def deliver() -> str:
        blocking.set()  # nothing else runs before the put below parks
        await queue.put(1)
        return "delivered"

    async def make_room() -> None:
        await blocking.wait()
        queue.get_nowait()

    room = asyncio.ensure_future(make_room())
    result = await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    await room
    assert result.results == ["delivered"] and not result.stopped
    assert queue.get_nowait() == 1


async def test_suspending_the_flow_abandons_a_blocked_callback() -> None:
    consumer = _consumer()
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(0)
    cleaned: list[str] = []
    blocking = asyncio.Event()

    async def deliver() -> None:
        try:
            blocking.set()  # nothing else runs before the put below parks
            await queue.put(1)
        finally:
            cleaned.append("finally ran")

    async def suspend() -> None:
        await blocking.wait()
        consumer.suspend_flow.set()

    suspending = asyncio.ensure_future(suspend())
    result = await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    await suspending
    await asyncio.sleep(0)  # mode cancels the losers; let the cancellation run
    assert result.done and result.done[0] is not None
    assert cleaned == ["finally ran"]  # the blocked put was cancelled
    assert queue.qsize() == 1  # and did not happen


async def test_errors_of_the_callback_propagate() -> None:
    consumer = _consumer()

    async def deliver() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await consumer.wait_first(deliver(), consumer.suspend_flow.wait())


async def test_resume_follows_bare_yields_and_futures() -> None:
    async def work() -> int:
        await asyncio.sleep(0)  # a bare yield
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, 41)  # still pending
        return (await fut) + 1

    coro = work()
    yielded = coro.send(None)
    assert await _resume(coro, yielded) == 42
