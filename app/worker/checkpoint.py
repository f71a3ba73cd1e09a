"""What happens between a batch and an offset commit, in the order it happens.

The worker acks only what a checkpoint stored, and Faust commits acked
offsets and nothing else (so no hook into its commit). Why each step is where
it is: docs/reliability.md, "What a commit does, step by step".

1. A batch (app/worker/pipeline.py, app/worker/effects.py) folds its records, sends its
   dead letters and status changes without waiting (their acknowledgements
   go to :class:`PendingSends`), puts its new states into the state cache as
   dirty, projects its rows to Redis and hands its events, unacked, to
   :meth:`Checkpoint.applied`.
2. Every ``checkpoint_interval_s``, and at once when Faust stops the flow (a
   rebalance or a shutdown), :meth:`Checkpoint.run` takes the dirty states,
   the sends not yet awaited and the applied events, with no await between.
3. It waits for the broker to acknowledge those sends: a state stored ahead
   of them would make their records, read again after a crash, send nothing.
4. The states go to the changelog, one record per registration (acks=all).
5. They are written to RocksDB, one ``WriteBatch`` per partition with the
   changelog offset of step 4 (where Faust's recovery resumes).
6. Clean cache entries beyond the cache's bound are dropped.
7. The events taken in step 2 are acked: Faust may now commit their offsets.

A failure in 3, 4 or 5 raises :class:`CheckpointFailed` (exit 75, nothing
more acked). Checkpoints never overlap (a lock), so the changelog never goes
back for a key; batches keep running while 3 and 4 wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from app.worker.faust_corrections.exit_policy import CheckpointFailed
from app.worker.faust_corrections.store import PartitionStore
from app.worker.state_cache import DirtyStates, StateCache
from infra.broker import BrokerProfile

__all__ = ["ChangelogWriter", "Checkpoint", "PendingSends"]

log = logging.getLogger(__name__)

#: Encode this many states between two yields to the event loop.
_ENCODE_SLICE = 256
#: Pending sends past which the acknowledged ones are forgotten early.
_PRUNE_AT = 50_000


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


class PendingSends:
    """Sends of the batches (dead letters, status changes) whose broker
    acknowledgement the next checkpoint awaits (step 3)."""

    def __init__(self) -> None:
        self._futures: list[Awaitable[Any]] = []

    def add(self, futures: Iterable[Awaitable[Any]]) -> None:
        self._futures.extend(futures)
        if len(self._futures) > _PRUNE_AT:
            # A long interval between checkpoints: forget the acknowledged.
            self._futures = [f for f in self._futures if not _succeeded(f)]

    def take(self) -> list[Awaitable[Any]]:
        """Hand over every send so far (synchronous)."""
        taken, self._futures = self._futures, []
        return taken

    def __len__(self) -> int:
        return len(self._futures)


def _succeeded(future: Awaitable[Any]) -> bool:
    return (
        isinstance(future, asyncio.Future)
        and future.done()
        and not future.cancelled()
        and future.exception() is None
    )


async def acknowledged(sends: Sequence[Awaitable[Any]]) -> None:
    """Wait for every send; raise the first refusal (every answer is taken,
    so a refusal of several, such as a missing ACL, is raised once and not
    logged again as "exception was never retrieved")."""
    for result in await asyncio.gather(*sends, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


class Checkpoint:
    """Runs steps 2-7 of the module docstring."""

    def __init__(
        self,
        cache: StateCache,
        store: PartitionStore,
        changelog: ChangelogWriter,
        *,
        sends: PendingSends | None = None,
        on_done: Callable[[float, int], None] | None = None,
    ) -> None:
        self.cache = cache
        self.store = store
        self.changelog = changelog
        self.sends = sends if sends is not None else PendingSends()
        self._lock = asyncio.Lock()
        self._on_done = on_done
        self._applied: list[Any] = []

    def applied(self, events: Sequence[Any]) -> None:
        """Step 1: the effects of these Faust events are in the cache, in
        Redis and among the pending sends; ack them after the next write."""
        self._applied.extend(events)

    @property
    def idle(self) -> bool:
        """Nothing to write and nothing to ack."""
        return not self._applied and not self.sends and not self.cache.dirty_count

    async def run(self) -> int:
        """Steps 2-7: store every state changed so far, then ack the events
        they cover; returns how many were acked (module docstring)."""
        dirty = self.cache.take_dirty()  # step 2, before any await
        sends = self.sends.take()
        events, self._applied = self._applied, []
        async with self._lock:
            try:
                await acknowledged(sends)  # step 3
            except (KafkaError, OSError, RuntimeError) as exc:
                raise CheckpointFailed(
                    f"{len(sends)} dead letters or status changes were not "
                    f"acknowledged by the broker ({exc!r})"
                ) from exc
            await self._write(dirty)  # steps 4-5
        self.cache.trim()  # step 6
        for event in events:  # step 7
            event.ack()
        return len(events)

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
