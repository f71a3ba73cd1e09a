"""What happens between a batch and an offset commit, in the order it happens.

A batch (app/worker.py) folds its records, sends its dead letters and status
changes (acknowledged by the broker), only then puts its new states into the
state cache (app/state_cache.py), and projects its rows to Redis from memory;
only then does Faust ack its records. (A checkpoint can run while a batch
waits for the broker: had the states entered the cache first, it could store
a state whose records, read again after a crash, would be redeliveries that
send nothing, ahead of the dead letters and status changes they caused.)
Faust commits acked offsets every ``broker_commit_interval`` seconds,
at a rebalance and at shutdown; every such commit goes through
``_Consumer._commit_tps`` (app/faust_corrections/transport.py), which runs
:meth:`Checkpoint.before_commit` between choosing the offsets and committing
them:

1. Faust picks the offsets to commit: per partition, the offset after the last
   acked record with no gap before it.
2. With no await in between, the checkpoint takes the cache's dirty states
   (every state changed since the previous checkpoint). Every record those
   offsets cover has been folded into the cache before it was acked, so the
   snapshot holds its effect (possibly more: effects of records acked later,
   which is harmless, since a redelivered record is recognized by position).
3. The states are encoded, one changelog record per registration, and sent
   per partition in as few produce requests as the broker allows; the
   checkpoint waits for the broker to acknowledge all of them.
4. The states are written to the local RocksDB store, one ``WriteBatch`` per
   partition together with the changelog offset of step 3 (from which Faust's
   recovery resumes).
5. Clean cache entries beyond the cache's bound are dropped, and the worker
   freezes its heap (app/heap.py: garbage collection only, no data).
6. Faust sends attached records, flushes its own producer (dead letters are
   already acknowledged) and commits the offsets of step 1.

A failure in 3 or 4 raises :class:`CheckpointFailed`: the worker exits (75)
without committing; its restart reads the uncommitted records again.
Checkpoints never overlap (a lock): a later snapshot is written after an
earlier one, so the changelog never goes back for a key. The stream keeps
running while steps 3 and 6 wait for the broker; what runs on the event loop
between two batches is step 2, the encoding (yielding every few hundred
states), queueing the records, the local write of step 4 and step 5.

On revocation the same checkpoint runs once more for everything dirty, before
the revoked partitions' entries are evicted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from app.faust_corrections.restart import CheckpointFailed
from app.faust_corrections.store import PartitionStore
from app.state_cache import DirtyStates, StateCache
from infra.broker import BrokerProfile

__all__ = ["ChangelogWriter", "Checkpoint"]

log = logging.getLogger(__name__)

#: Encode this many states between two yields to the event loop.
_ENCODE_SLICE = 256


class ChangelogWriter:
    """Writes state records to the changelog topic, batched per partition."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        profile: BrokerProfile,
        *,
        client_kwargs: dict[str, object] | None = None,
    ) -> None:
        self.topic = topic
        self._kwargs: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "acks": "all",
            "linger_ms": 2,
            "max_batch_size": 512 * 1024,
            "max_request_size": 4 * 1024 * 1024,
            "enable_idempotence": False,
            **(client_kwargs or {}),
        }
        self._started: AIOKafkaProducer | None = None

    @property
    def _producer(self) -> AIOKafkaProducer:
        if self._started is None:
            raise RuntimeError("the changelog writer is not started")
        return self._started

    async def start(self) -> None:
        """Create and start the producer (aiokafka needs the running loop)."""
        if self._started is None:
            producer = AIOKafkaProducer(**self._kwargs)
            await producer.start()
            self._started = producer

    async def stop(self) -> None:
        producer, self._started = self._started, None
        if producer is not None:
            await producer.stop()

    async def write(
        self, partition: int, records: Sequence[tuple[bytes, bytes]]
    ) -> int:
        """Send the records to the partition; the offset of the last one."""
        send = self._producer.send
        futures = [
            await send(self.topic, value, key, partition=partition)
            for key, value in records
        ]
        done = await asyncio.gather(*futures)
        return int(done[-1].offset)


class Checkpoint:
    """Runs steps 2-4 and the cache trim of step 5 of the module docstring."""

    def __init__(
        self,
        cache: StateCache,
        store: PartitionStore,
        changelog: ChangelogWriter,
        *,
        on_done: Callable[[float, int], None] | None = None,
    ) -> None:
        self.cache = cache
        self.store = store
        self.changelog = changelog
        self._lock = asyncio.Lock()
        self._on_done = on_done

    async def before_commit(self) -> None:
        """Steps 2-4: write every state changed so far; see the module docstring."""
        dirty = self.cache.take_dirty()  # step 2, before any await
        async with self._lock:
            await self._write(dirty)
        self.cache.trim()  # step 5 (the commit itself follows in Faust)

    async def _write(self, dirty: DirtyStates) -> None:
        if not dirty:
            return
        started = time.perf_counter()
        count = 0
        try:
            encoded: dict[int, list[tuple[bytes, bytes]]] = {}
            for partition, states in dirty.items():
                records = encoded[partition] = []
                for i, (reg_id, state) in enumerate(states.items(), 1):
                    records.append((reg_id.encode(), state.to_bytes()))
                    if i % _ENCODE_SLICE == 0:
                        await asyncio.sleep(0)
                count += len(records)
            partitions = list(encoded)
            offsets = await asyncio.gather(
                *(self.changelog.write(p, encoded[p]) for p in partitions)
            )
            for partition, offset in zip(partitions, offsets, strict=True):
                self.store.write(partition, dict(encoded[partition]), offset)
        except (KafkaError, OSError, RuntimeError) as exc:
            raise CheckpointFailed(
                f"could not write {count} states to the changelog/local store"
            ) from exc
        elapsed = time.perf_counter() - started
        if self._on_done is not None:
            self._on_done(elapsed, count)
        log.debug("checkpoint: %d states in %.1f ms", count, elapsed * 1000)
