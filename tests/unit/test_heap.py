"""HeapFreezer: the heap alive at a checkpoint leaves the collector's reach;
frozen cycles are reclaimed at the hourly unfreeze."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from app.worker.heap import HeapFreezer


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_objects_alive_at_a_checkpoint_are_frozen() -> None:
    freezer = HeapFreezer(count_every_s=0, clock=_Clock())
    before = gc.get_freeze_count()
    kept = [{"n": i} for i in range(1000)]
    freezer.after_checkpoint()
    assert freezer.frozen() >= before + len(kept)
    assert gc.get_freeze_count() == freezer.frozen()


def test_a_frozen_cycle_is_reclaimed_at_the_periodic_unfreeze() -> None:
    clock = _Clock()
    freezer = HeapFreezer(unfreeze_every_s=3600, count_every_s=0, clock=clock)
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    freezer.after_checkpoint()
    del a, b
    gc.collect()
    assert alive() is not None  # frozen: a full collection does not see it
    clock.now = 1800.0
    freezer.after_checkpoint()
    gc.collect()
    assert alive() is not None  # not yet an hour
    clock.now = 3600.0
    freezer.after_checkpoint()
    assert alive() is None
    assert freezer.frozen() > 0  # and the heap is frozen again afterwards


def test_the_frozen_count_is_taken_at_most_once_per_interval() -> None:
    clock = _Clock()
    freezer = HeapFreezer(count_every_s=60, clock=clock)
    freezer.after_checkpoint()
    first = freezer.frozen()
    assert first == gc.get_freeze_count()
    kept = [_Node() for _ in range(1000)]
    freezer.after_checkpoint()
    clock.now = 59.0
    assert freezer.frozen() == first  # not counted again: the walk is O(heap)
    clock.now = 60.0
    assert freezer.frozen() >= first + len(kept)
