"""Keeping CPython's cyclic garbage collector off the worker's hot path.

The worker's large, long-lived heap (state cache, catalog, forecast tables)
churns on every batch, which makes CPython run full collections that walk
the whole heap while the event loop stands still. :class:`HeapFreezer`
calls :func:`gc.freeze` after every checkpoint, so collections skip what was
alive then; once every ``unfreeze_every_s`` it unfreezes and collects fully,
to reclaim frozen cycles. Measurements: docs/performance.md ("The heap
freeze").
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
