"""One timer bounds many page reads (api/store.py, _Deadlines): a read past
its deadline becomes a 503, any other cancellation stays a cancellation, and
no timer runs while nothing is read."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from api.errors import ServiceUnavailable, not_found
from api.store import RedisPageStore, _Deadlines
from infra.read_model import ReadModelKeys
from tests.waiting import wait_for_async


class _Generation:
    """Generation 0, read at once; it never moves."""

    def fresh(self) -> ReadModelKeys:
        return ReadModelKeys()

    async def current(self) -> ReadModelKeys:
        return ReadModelKeys()

    async def moved(self, seen: ReadModelKeys) -> None:
        return None


def _store(delays: list[float], timeout_s: float = 0.3) -> RedisPageStore:
    """A page store whose script answers after the next of ``delays``."""
    store = RedisPageStore(Redis(host="127.0.0.1", port=1), timeout_s=timeout_s)

    async def script(keys: Any, args: Any, after: bytes = b"") -> list[Any]:
        await asyncio.sleep(delays.pop(0))
        return [-1]  # no sentinel: a 404 (the generation did not move)

    store._script = script  # type: ignore[assignment]
    store.generation = _Generation()  # type: ignore[assignment]

    async def unknown(keys: ReadModelKeys, field: str, ident: str) -> Exception:
        return not_found(field, ident)  # the read model is materialized

    store._unknown = unknown  # type: ignore[method-assign]
    return store


def test_reads_past_their_deadline_are_503s_and_the_others_are_answered() -> None:
    async def go() -> list[BaseException | None]:
        store = _store([0.05, 1.0, 0.1, 1.0])
        outcomes: list[BaseException | None] = []

        async def read() -> None:
            try:
                await store.learning_instance_page("li", ["g"], 0, 10)
            except Exception as exc:
                outcomes.append(exc)

        started = time.monotonic()
        await asyncio.gather(*(read() for _ in range(4)))
        assert time.monotonic() - started < 0.3 + _Deadlines.PERIOD_S + 0.2
        assert store._deadlines is not None
        assert store._deadlines._due == {} and store._deadlines._expired == set()
        deadlines = store._deadlines

        async def idle() -> bool:
            return deadlines._timer is None

        # The timer that was due when the last read ended runs once, then stops.
        await wait_for_async(
            idle, timeout_s=_Deadlines.PERIOD_S * 10, what="no timer while idle"
        )
        return outcomes

    outcomes = asyncio.run(go())
    late = [o for o in outcomes if isinstance(o, ServiceUnavailable)]
    assert len(late) == 2
    assert all("no answer within 0.3 s" in str(o.details) for o in late)
    assert len([o for o in outcomes if o is not None and o not in late]) == 2  # 404s


def test_another_cancellation_stays_a_cancellation() -> None:
    async def go() -> None:
        store = _store([5.0])
        task = asyncio.create_task(store.learning_instance_page("li", ["g"], 0, 10))

        async def reading() -> bool:
            """The read has begun: its deadline is recorded."""
            return store._deadlines is not None and task in store._deadlines._due

        await wait_for_async(reading, timeout_s=2, what="the read to begin")
        task.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await task
        assert store._deadlines is not None and store._deadlines._due == {}

    asyncio.run(go())


def test_a_store_without_a_timeout_runs_no_timer() -> None:
    async def go() -> None:
        store = _store([0.01], timeout_s=0.3)
        store._deadlines = None
        with pytest.raises(Exception, match="not found"):
            await store.learning_instance_page("li", ["g"], 0, 10)

    asyncio.run(go())
