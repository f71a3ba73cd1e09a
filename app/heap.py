"""Keeping CPython's cyclic garbage collector off the worker's hot path.

The worker holds a large, long-lived heap (the state cache, the catalog,
forecast tables) and replaces part of it on every batch (states are immutable
and rebuilt). That churn makes CPython 3.11 run a full ("generation 2")
collection again and again, each one walking the whole heap while the event
loop stands still. Measured with ``bench.pipeline`` (two workers, 75 s of replay
and live stream): 35 full collections per worker, 1.9 s in total, the longest
87 ms -- each a stall of every batch, fetch and commit of that worker.

:class:`HeapFreezer` calls :func:`gc.freeze` after every checkpoint: the
objects alive then move to the permanent generation, which collections do not
walk; objects created later are collected as before, and frozen objects are
still freed by reference counting the moment they are dropped (a replaced
state, an evicted cache entry). Same bench with it: 7 full collections,
68-80 ms in total. Freezing is O(1) (CPython splices the generation lists).

What freezing gives up: an object frozen while in a reference cycle that later
becomes garbage is not reclaimed until the next full collection of unfrozen
objects. So once every ``unfreeze_every_s`` (default one hour) the freezer
unfreezes everything and runs one full collection at a checkpoint: one pause
of the length measured above per hour, instead of dozens per minute.

Counting the frozen objects (:func:`gc.get_freeze_count`) walks the whole
permanent generation: on every checkpoint that was 3 % of a replaying
worker's CPU (py-spy, docs/performance.md), so :meth:`HeapFreezer.frozen`
counts at most once per ``count_every_s``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

__all__ = ["HeapFreezer"]

log = logging.getLogger(__name__)


class HeapFreezer:
    """Freeze the heap after each checkpoint; reclaim frozen cycles hourly."""

    def __init__(
        self,
        *,
        unfreeze_every_s: float = 3600.0,
        count_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unfreeze_every_s = unfreeze_every_s
        self.count_every_s = count_every_s
        self._clock = clock
        self._since = clock()
        self._counted_at: float | None = None
        self._count = 0

    def after_checkpoint(self) -> None:
        """Call after each checkpoint (the states it wrote are long-lived)."""
        now = self._clock()
        if now - self._since >= self.unfreeze_every_s:
            self._since = now
            frozen = gc.get_freeze_count()
            gc.unfreeze()
            began = time.perf_counter()
            found = gc.collect()
            log.info(
                "heap: unfroze %d objects, full collection found %d in %.0f ms",
                frozen,
                found,
                (time.perf_counter() - began) * 1000,
            )
        gc.freeze()

    def frozen(self) -> int:
        """Objects in the permanent generation, counted at most once per
        ``count_every_s`` (the count walks all of them)."""
        now = self._clock()
        if self._counted_at is None or now - self._counted_at >= self.count_every_s:
            self._counted_at = now
            self._count = gc.get_freeze_count()
        return self._count
