"""The worker's producer buffer flushes every record before a commit."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.transport.producer import ProducerBuffer

from app.faust_corrections.transport import _DrainingBuffer


class _SlowChannel:
    """Stands in for the topic and aiokafka: each record takes ``delay``
    seconds to be accepted."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sent: list[int] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(self.delay)
        self.sent.append(fut.n)


def _record(channel: _SlowChannel, n: int) -> Any:
    return SimpleNamespace(n=n, message=SimpleNamespace(channel=channel))


async def _flush_after_put(buffer_cls: type[ProducerBuffer], n: int) -> list[int]:
    buffer = buffer_cls()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    sends = _SlowChannel(delay=0.15)
    await buffer.start()
    try:
        for i in range(n):
            buffer.put(_record(sends, i))
        await buffer.flush()
        sent_at_flush = list(sends.sent)
        while buffer.size:  # let the rest go before stopping
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        return sent_at_flush
    finally:
        await asyncio.wait_for(buffer.stop(), 5.0)


def test_faust_buffer_flush_returns_with_records_unsent() -> None:
    # The bug the draining buffer exists for: a record slower than 0.1 s ends
    # Faust's flush early, so a commit could precede the changelog write.
    sent = asyncio.run(_flush_after_put(ProducerBuffer, 3))
    assert len(sent) < 3


def test_draining_buffer_flush_waits_for_every_record() -> None:
    sent = asyncio.run(_flush_after_put(_DrainingBuffer, 3))
    assert sent == [0, 1, 2]


def test_draining_buffer_flush_with_nothing_put_returns_at_once() -> None:
    assert asyncio.run(_flush_after_put(_DrainingBuffer, 0)) == []


async def _flush_while_putting() -> tuple[list[int], list[int]]:
    buffer = _DrainingBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    sends = _SlowChannel(delay=0.15)
    await buffer.start()
    try:
        for i in range(2):
            buffer.put(_record(sends, i))
        flush = asyncio.ensure_future(buffer.flush())
        await asyncio.sleep(0)
        for i in range(2, 6):  # put while the flush waits: not its business
            buffer.put(_record(sends, i))
        await flush
        sent_at_flush = list(sends.sent)
        while buffer.unsent:
            await asyncio.sleep(0.05)
        return sent_at_flush, list(sends.sent)
    finally:
        await asyncio.wait_for(buffer.stop(), 5.0)


def test_draining_buffer_flush_does_not_wait_for_records_put_after_it() -> None:
    # A busy stream keeps putting changelog records; a flush that waited for
    # those too might never end, and offsets would never be committed.
    at_flush, at_end = asyncio.run(_flush_while_putting())
    assert at_flush[:2] == [0, 1]
    assert len(at_flush) < 6
    assert at_end == [0, 1, 2, 3, 4, 5]
