"""Builds the work-remaining forecast tables off the event loop's critical path.

The worker evaluates rows with a :class:`~processors.forecaster.
DeferredForecaster`: a row whose exact table is not held gets a provisional
forecast and the key is handed to :meth:`ForecastBuilder.request`. The builder
runs one build at a time in a worker thread (:func:`~processors.forecast.
build_chain` is numpy array work, which releases the GIL for its loops), puts
the result into the :class:`~processors.forecast.ForecastTables` on the loop's
thread (the tables are not thread-safe and are only touched there), then calls
``on_built(keys)`` so the worker re-derives the rows that were provisional.

Fairness: keys are queued per owner (e.g. the learning instance or partner
whose rows wait on them) and owners are served round-robin, one build each,
so an owner with many distinct keys delays another owner's key by at most one
build (tens of ms at the worst parameters within the bounds), not by its
whole queue; the tables built are charged to the owner they were built for,
so with a share set on the tables (``ForecastTables(owner_share_bytes=...)``)
an owner's many tables evict its own, not another owner's.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

from processors.forecast import ForecastTables, TableKey, build_chain

__all__ = ["THRASH_BUILDS", "THRASH_WINDOW_S", "ForecastBuilder", "OnBuilt", "Waiting"]

log = logging.getLogger(__name__)

#: A key built this many times within THRASH_WINDOW_S is not built again
#: until the window has passed (see ForecastBuilder._thrashing).
THRASH_BUILDS = 2
THRASH_WINDOW_S = 60.0

#: Called on the loop's thread with the requested keys that are now held.
OnBuilt = Callable[[frozenset[TableKey]], Awaitable[None] | None]

_Item = TypeVar("_Item", bound=Hashable)


class Waiting(Generic[_Item]):
    """Which items (e.g. registration ids) have rows waiting on which keys."""

    def __init__(self) -> None:
        self._by_key: dict[TableKey, set[_Item]] = {}

    def __len__(self) -> int:
        """Keys with waiting items."""
        return len(self._by_key)

    def add(self, item: _Item, keys: Iterable[TableKey]) -> None:
        """``item``'s rows were derived without these keys' tables."""
        for key in keys:
            self._by_key.setdefault(key, set()).add(item)

    def release(self, keys: Iterable[TableKey]) -> set[_Item]:
        """Items waiting on any of ``keys`` (now built), forgotten for them.

        An item also waiting on another key is re-derived now and noted
        again by the caller if that key is still missing.
        """
        released: set[_Item] = set()
        for key in keys:
            released |= self._by_key.pop(key, set())
        return released

    def forget(self, keep: Callable[[_Item], bool]) -> None:
        """Drop the items ``keep`` rejects (e.g. of revoked partitions)."""
        for key in list(self._by_key):
            items = {item for item in self._by_key[key] if keep(item)}
            if items:
                self._by_key[key] = items
            else:
                del self._by_key[key]


class ForecastBuilder:
    """Queue of missing table keys, built one at a time in a thread."""

    def __init__(
        self,
        tables: ForecastTables,
        on_built: OnBuilt,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tables = tables
        self._on_built = on_built
        self._clock = clock
        # key -> times it was built within THRASH_WINDOW_S (oldest first)
        self._built_at: OrderedDict[TableKey, list[float]] = OrderedDict()
        self._queues: OrderedDict[Hashable, deque[TableKey]] = OrderedDict()
        self._queued: set[TableKey] = set()
        self._ready: set[TableKey] = set()  # requested while already held
        self._failed: set[TableKey] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.builds = 0  # chains built (for metrics and tests)
        self.thrash_refusals = 0  # requests refused as thrashing (ditto)

    @property
    def queued(self) -> int:
        """Keys waiting to be built or reported."""
        return len(self._queued) + len(self._ready)

    def request(self, keys: Iterable[TableKey], owner: Hashable = None) -> None:
        """Queue keys for building. Call on the loop's thread.

        A key held by now (built with another chain since it was missed) is
        reported to ``on_built`` without a build; queued and failed keys are
        ignored.
        """
        for key in keys:
            if key in self._queued or key in self._failed:
                continue
            if key in self._tables:
                self._ready.add(key)
                continue
            if self._thrashing(key):
                continue
            self._queues.setdefault(owner, deque()).append(key)
            self._queued.add(key)
        if self._queued or self._ready:
            self._wake.set()

    def start(self) -> None:
        """Run the build loop as a task of the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name="forecast-builder"
            )

    async def stop(self) -> None:
        """Cancel the build loop (a build in its thread finishes, unused)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Build queued keys until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queued or self._ready:
                try:
                    await self.build_next()
                except Exception:
                    # on_built is the worker's code: report, keep building.
                    log.exception("forecast builder: on_built failed")

    async def build_next(self) -> frozenset[TableKey]:
        """Build the next owner's next key; report every queued key now held."""
        owner, key = self._next_key()
        if key is not None and key not in self._tables:
            below = self._tables.below(key)
            try:
                built = await asyncio.to_thread(build_chain, key, below)
            except (ArithmeticError, ValueError, MemoryError):
                log.exception("forecast table %s could not be built", key)
                built = []
            self.builds += 1
            self._note_built(key)
            self._tables.insert(built, owner)
            if key not in self._tables:
                # Failed, or larger than the whole budget (only outside the
                # parameter bounds): its rows stay provisional, no retry loop.
                log.warning("forecast table %s is not held; rows stay provisional", key)
                self._failed.add(key)
                self._queued.discard(key)
        done = {k for k in self._queued if k in self._tables} | self._ready
        if key is not None and key in self._tables:
            done.add(key)
        self._ready = set()
        self._queued -= done
        if not done:
            return frozenset()
        result = self._on_built(frozenset(done))
        if inspect.isawaitable(result):
            await result
        return frozenset(done)

    def _thrashing(self, key: TableKey) -> bool:
        """Was the key built :data:`THRASH_BUILDS` times within
        :data:`THRASH_WINDOW_S` and evicted again? Then the tables the rows
        need at once exceed the memory budget: building it again would only
        evict another one (a loop burning a core). Its rows stay provisional
        until the window has passed."""
        now = self._clock()
        while self._built_at:
            oldest, times = next(iter(self._built_at.items()))
            if times[-1] >= now - THRASH_WINDOW_S:
                break
            del self._built_at[oldest]
        recent = [t for t in self._built_at.get(key, ()) if t >= now - THRASH_WINDOW_S]
        if len(recent) < THRASH_BUILDS:
            return False
        self.thrash_refusals += 1
        if self.thrash_refusals == 1 or self.thrash_refusals % 1000 == 0:
            log.warning(
                "forecast table %s was built %d times in %.0f s and evicted again: "
                "the tables needed at once exceed MASTERY_FORECAST_CACHE_MB; rows "
                "needing it stay provisional for now (%d such refusals)",
                key,
                len(recent),
                THRASH_WINDOW_S,
                self.thrash_refusals,
            )
        return True

    def _note_built(self, key: TableKey) -> None:
        times = self._built_at.pop(key, [])
        times.append(self._clock())
        self._built_at[key] = times[-THRASH_BUILDS:]  # most recent last

    def _next_key(self) -> tuple[Hashable, TableKey | None]:
        """The next owner's next queued key, and that owner (charged with the
        tables built for it, see ForecastTables.insert)."""
        while self._queues:
            owner, queue = next(iter(self._queues.items()))
            self._queues.move_to_end(owner)  # round-robin across owners
            while queue:
                key = queue.popleft()
                if key in self._queued:
                    if not queue:
                        del self._queues[owner]
                    return owner, key
            del self._queues[owner]
        return None, None
