"""Reading and writing the state table's RocksDB store by partition.

Faust's RocksDB store (``faust.stores.rocksdb.Store``, faust-streaming 0.15)
reads and writes a key in the partition of "the current event". Inside a
batch (``take_ready``, as in Faust's ``take_events``) that is the batch's
*last* event, whose partition may not be the key's: a read there finds
nothing, a write lands in the wrong partition (and changelog partition). The
worker therefore addresses the partition explicitly, through these
functions, and writes whole checkpoints at once: one RocksDB ``WriteBatch``
per partition holding the states and the changelog offset they correspond to
(Faust's "persisted offset", from which its recovery resumes reading the
changelog).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import rocksdict

__all__ = ["PartitionStore"]


class PartitionStore:
    """The raw bytes of one Faust table's RocksDB store, addressed by partition."""

    def __init__(self, table: Any) -> None:
        self._table = table

    @property
    def _store(self) -> Any:
        return self._table.data

    def _db(self, partition: int) -> Any:
        # Faust opens a partition's database lazily, on first use.
        return self._store._db_for_partition(partition)

    def get(self, partition: int, key: bytes) -> bytes | None:
        value: bytes | None = self._db(partition).get(key)
        return value

    def write(
        self, partition: int, items: Mapping[bytes, bytes], changelog_offset: int
    ) -> None:
        """Store ``items`` and the changelog offset they were written up to,
        atomically."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in items.items():
            batch.put(key, value)
        batch.put(self._store.offset_key, str(changelog_offset).encode())
        self._db(partition).write(batch)

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        offset_key = self._store.offset_key
        for key, value in self._db(partition).items():
            if key != offset_key:
                yield key, value

    def persisted_offset(self, partition: int) -> int | None:
        raw = self.get(partition, self._store.offset_key)
        return None if raw is None else int(raw)
