"""Decoded registration states in memory, written back at commit time.

What Kafka Streams' record caches and Quix Streams' state transactions do:
a batch reads and updates states here, not in RocksDB; the states it changed
are *dirty* until the next checkpoint (app/worker/checkpoint.py) writes each of them
once to the changelog and the local store, however many batches changed it in
between. Reads fall through to the RocksDB store of the state's partition.

Entries are kept per source partition, so a revoked partition is evicted
whole. Clean entries beyond ``max_entries`` are dropped after a checkpoint
(oldest first); dirty entries are never dropped before they are written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from app.worker.faust_corrections.store import PartitionStore
from processors.registration import RegistrationState

__all__ = ["DirtyStates", "StateCache"]

#: partition -> registration id -> state changed since the last checkpoint
DirtyStates = dict[int, dict[str, RegistrationState]]


class StateCache:
    """Registration states by partition; see the module docstring."""

    def __init__(self, store: PartitionStore, *, max_entries: int = 200_000) -> None:
        self._store = store
        self.max_entries = max_entries
        self._entries: dict[int, dict[str, RegistrationState]] = {}
        self._dirty: DirtyStates = {}

    def __len__(self) -> int:
        return sum(len(p) for p in self._entries.values())

    @property
    def dirty_count(self) -> int:
        return sum(len(p) for p in self._dirty.values())

    def get(self, registration_id: str, partition: int) -> RegistrationState | None:
        """The state of a registration whose records are on ``partition``."""
        entries = self._entries.get(partition)
        if entries is None:
            entries = self._entries[partition] = {}
        state = entries.get(registration_id)
        if state is None:
            raw = self._store.get(partition, registration_id.encode())
            if raw is None:
                return None
            state = entries[registration_id] = RegistrationState.from_bytes(raw)
        return state

    def peek(self, registration_id: str, partition: int) -> RegistrationState | None:
        """The current state, like :meth:`get`, without caching a store read."""
        cached = self._entries.get(partition, {}).get(registration_id)
        if cached is not None:
            return cached
        raw = self._store.get(partition, registration_id.encode())
        return None if raw is None else RegistrationState.from_bytes(raw)

    def put(self, partition: int, state: RegistrationState) -> None:
        """Record a changed state (dirty until the next checkpoint)."""
        reg_id = state.registration_id
        self._entries.setdefault(partition, {})[reg_id] = state
        self._dirty.setdefault(partition, {})[reg_id] = state

    def take_dirty(self) -> DirtyStates:
        """Hand over the states changed since the last call (synchronous)."""
        dirty, self._dirty = self._dirty, {}
        return dirty

    def evict(self, partitions: Iterable[int]) -> int:
        """Forget the partitions' entries, dirty ones included; returns how many.

        Only after their last checkpoint (on revocation): a dirty entry dropped
        here belongs to records whose offsets were not committed, which the
        partition's next owner reads again.
        """
        dropped = 0
        for partition in partitions:
            dropped += len(self._entries.pop(partition, {}))
            self._dirty.pop(partition, None)
        return dropped

    def trim(self) -> int:
        """Drop clean entries beyond ``max_entries`` (oldest first)."""
        excess = len(self) - self.max_entries
        dropped = 0
        for partition, entries in self._entries.items():
            if excess <= 0:
                break
            dirty = self._dirty.get(partition, {})
            for reg_id in list(entries):
                if excess <= 0:
                    break
                if reg_id not in dirty:
                    del entries[reg_id]
                    excess -= 1
                    dropped += 1
        return dropped

    def items(self, partitions: Iterable[int]) -> Iterator[RegistrationState]:
        """Every state of the partitions: the store's, overlaid by the cache's."""
        for partition in partitions:
            cached = dict(self._entries.get(partition, {}))
            for key, raw in self._store.items(partition):
                reg_id = key.decode()
                state = cached.pop(reg_id, None)
                yield state if state is not None else RegistrationState.from_bytes(raw)
            yield from cached.values()  # not in the store yet
