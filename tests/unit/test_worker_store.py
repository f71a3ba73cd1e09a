"""The worker's state cache reads and writes a registration in its own partition."""

from __future__ import annotations

import weakref
from pathlib import Path
from types import SimpleNamespace

from faust.streams import _current_event

from app.worker.wiring import create_worker
from infra.broker import KAFKA
from infra.settings import Settings
from processors.registration import RegistrationState


class _Event:
    """Stands in for a Faust event: only its record's position matters here."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(
            topic="t.registration-events.v1", partition=partition, offset=5
        )


def _worker(tmp_path: Path, **settings: object):  # type: ignore[no-untyped-def]
    return create_worker(
        Settings(data_dir=str(tmp_path), topic_prefix="t", **settings),
        KAFKA,
        "127.0.0.1:1",  # never contacted: the worker is not started
        "redis://127.0.0.1:1",
    )


def test_cache_reads_the_registrations_partition_not_the_batchs_last(
    tmp_path: Path,
) -> None:
    worker = _worker(tmp_path)
    state = RegistrationState("reg", "li", "u", "learner")
    on_partition_1, on_partition_0 = _Event(1), _Event(0)  # weakly referenced
    token = _current_event.set(weakref.ref(on_partition_1))
    try:
        worker.states.data[b"reg"] = state.to_bytes()  # Faust stores it in partition 1
    finally:
        _current_event.reset(token)

    # Inside a batch Faust's "current event" is the batch's last
    # one, here of partition 0.
    token = _current_event.set(weakref.ref(on_partition_0))
    try:
        assert worker.states.get(b"reg") is None  # Faust's own read misses it
        assert worker.cache.get("reg", 1) == state
        assert worker.cache.get("reg", 0) is None  # and nothing in partition 0
    finally:
        _current_event.reset(token)


def test_store_writes_states_and_changelog_offset_atomically(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    a = RegistrationState("a", "li", "u1", "learner", source_partition=2)
    b = RegistrationState("b", "li", "u2", "learner", source_partition=2)
    worker.store.write(2, {b"a": a.to_bytes(), b"b": b.to_bytes()}, 41)
    assert worker.store.persisted_offset(2) == 41
    # Faust's recovery resumes from the same offset it would have persisted.
    assert worker.states.data.persisted_offset(SimpleNamespace(partition=2)) == 41
    assert sorted(k for k, _ in worker.store.items(2)) == [b"a", b"b"]
    assert worker.store.persisted_offset(3) is None


def test_cache_write_back_evict_and_trim(tmp_path: Path) -> None:
    worker = _worker(tmp_path, state_cache_max_entries=2)
    cache, store = worker.cache, worker.store
    old = RegistrationState("a", "li", "u1", "learner", source_partition=0)
    store.write(0, {b"a": old.to_bytes()}, 7)
    new = RegistrationState(
        "a", "li", "u1", "learner", seen="x" * 8, source_partition=0
    )
    cache.put(0, new)
    cache.put(1, RegistrationState("b", "li", "u2", "learner", source_partition=1))
    # The cache overlays the store; states not in the store yet are listed too.
    assert sorted(s.registration_id for s in cache.items([0, 1])) == ["a", "b"]
    assert next(s for s in cache.items([0]) if s.registration_id == "a") == new
    dirty = cache.take_dirty()
    assert {p: sorted(d) for p, d in dirty.items()} == {0: ["a"], 1: ["b"]}
    assert cache.take_dirty() == {}  # handed over once
    cache.put(1, RegistrationState("c", "li", "u3", "learner", source_partition=1))
    assert len(cache) == 3
    assert cache.trim() == 1  # one clean entry over the bound; dirty "c" stays
    assert cache.dirty_count == 1
    assert cache.evict([1]) >= 1
    assert cache.dirty_count == 0
    assert cache.get("b", 1) is None  # evicted and never written to the store
    assert cache.get("a", 0) == old  # evicted or trimmed: read back from the store
