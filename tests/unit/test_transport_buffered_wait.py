"""The fetch loop's wait is short, and shorter while partitions are held back.

Faust's fetch loop asks the consumer thread for records with a 1 s wait.
While a stream's queue is under pressure Faust leaves that stream's
partitions out of the request; when all the busy ones are out, the wait
covers only idle partitions (the catalog), and the records of the busy ones,
already fetched, sat for up to that second after the queue had drained: a
replaying worker idled about half its time (docs/performance.md, "The fetch
loop's wait"). ``pytest --without buffered-wait`` puts Faust's ``_getmany``
back and this test fails.
"""

from __future__ import annotations

from typing import Any

from faust.types import TP

from app.worker.faust_corrections.transport import (
    BUFFERED_WAIT_S,
    FETCH_LOOP_WAIT_S,
    MasteryApp,
)
from infra.broker import KAFKA


class _Thread:
    """Stands in for the consumer thread: records the wait it is asked for."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def getmany(self, active_partitions: Any, timeout: float) -> dict[Any, Any]:
        self.waits.append(timeout)
        return {}


async def test_the_fetch_loop_never_waits_faust_s_second() -> None:
    app = MasteryApp(
        "buffered-wait-test",
        broker="kafka://127.0.0.1:9",
        profile=KAFKA,
        web_enabled=False,
    )
    consumer = app.consumer
    thread = _Thread()
    consumer._thread = thread
    busy = TP("registrations", 0)

    await consumer._getmany({busy, TP("catalog", 0)}, 1.0)
    consumer.on_buffer_full(busy)  # its stream's queue is under pressure
    await consumer._getmany({TP("catalog", 0)}, 1.0)
    consumer.on_buffer_drop(busy)
    await consumer._getmany({busy, TP("catalog", 0)}, 0.01)

    assert BUFFERED_WAIT_S <= 0.005 and FETCH_LOOP_WAIT_S <= 0.05
    assert thread.waits == [FETCH_LOOP_WAIT_S, BUFFERED_WAIT_S, 0.01]
