"""The checkpoint stores no state before the broker has acknowledged what the
batches behind it sent, and acks no event before its states are stored
(app/worker/checkpoint.py, steps 2-7)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError

from app.worker.checkpoint import Checkpoint, PendingSends
from app.worker.faust_corrections.exit_policy import (
    EXIT_NOPERM,
    AccessDenied,
    CheckpointFailed,
    access_denied,
)
from app.worker.state_cache import StateCache
from processors.registration import RegistrationState


class _Store:
    """The local store (fake: a dict per partition)."""

    def __init__(self) -> None:
        self.written: list[tuple[int, dict[bytes, bytes], int]] = []

    def get(self, partition: int, key: bytes) -> bytes | None:
        return None

    def write(
        self, partition: int, items: Mapping[bytes, bytes], changelog_offset: int
    ) -> None:
        self.written.append((partition, dict(items), changelog_offset))


class _Changelog:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.offset = 0

    async def write(
        self, partition: int, records: Sequence[tuple[bytes, bytes]]
    ) -> int:
        self.log.extend(f"changelog {key.decode()}" for key, _ in records)
        self.offset += len(records)
        return self.offset


def _checkpoint() -> tuple[Checkpoint, StateCache, _Store, list[str]]:
    store = _Store()
    log: list[str] = []
    cache = StateCache(store)  # type: ignore[arg-type]
    checkpoint = Checkpoint(cache, store, _Changelog(log))  # type: ignore[arg-type]
    return checkpoint, cache, store, log


def _state(reg_id: str) -> RegistrationState:
    return RegistrationState(reg_id, "li", "u", "learner")


async def _acked(log: list[str], name: str, delay: float) -> None:
    await asyncio.sleep(delay)
    log.append(f"acked {name}")


async def test_states_are_stored_only_after_the_sends_before_them_are_acked() -> None:
    checkpoint, cache, store, log = _checkpoint()
    loop = asyncio.get_running_loop()
    # A batch sent a dead letter and a status change, then put its state.
    slow = loop.create_task(_acked(log, "status change", 0.05))
    fast = loop.create_task(_acked(log, "dead letter", 0.0))
    checkpoint.sends.add([slow, fast])
    cache.put(0, _state("reg-1"))

    await checkpoint.run()

    assert log == ["acked dead letter", "acked status change", "changelog reg-1"]
    assert [p for p, _, _ in store.written] == [0]
    assert len(checkpoint.sends) == 0


async def _snapshot_taken(checkpoint: Checkpoint) -> None:
    """Until a running checkpoint has taken the pending sends (step 2)."""
    while len(checkpoint.sends):
        await asyncio.sleep(0)


async def test_a_send_after_the_snapshot_waits_for_the_next_checkpoint() -> None:
    checkpoint, cache, _, log = _checkpoint()
    loop = asyncio.get_running_loop()
    cache.put(0, _state("reg-1"))
    gate = loop.create_future()
    checkpoint.sends.add([gate])
    running = loop.create_task(checkpoint.run())
    await _snapshot_taken(checkpoint)
    # The checkpoint waits for the first batch's send; a later batch sends.
    assert log == [] and not running.done()
    later = loop.create_future()
    checkpoint.sends.add([later])
    gate.set_result(None)
    await running
    assert log == ["changelog reg-1"]
    # The later send belongs to the next checkpoint, which waits for it.
    assert len(checkpoint.sends) == 1
    cache.put(1, _state("reg-2"))
    following = loop.create_task(checkpoint.run())
    await _snapshot_taken(checkpoint)
    assert not following.done()
    later.set_result(None)
    await following
    assert log == ["changelog reg-1", "changelog reg-2"]


async def test_a_refused_send_stores_and_acks_nothing_and_fails_the_checkpoint() -> (
    None
):
    checkpoint, cache, store, log = _checkpoint()
    loop = asyncio.get_running_loop()
    refused = loop.create_future()
    refused.set_exception(KafkaTimeoutError())
    checkpoint.sends.add([refused])
    cache.put(0, _state("reg-1"))
    checkpoint.applied([_Event("e1", log)])

    with pytest.raises(CheckpointFailed, match="not acknowledged"):
        await checkpoint.run()
    assert log == [] and store.written == []


async def test_a_send_denied_by_an_acl_ends_the_worker_as_access_denied() -> None:
    checkpoint, _, _, _ = _checkpoint()
    loop = asyncio.get_running_loop()
    denied = loop.create_future()
    denied.set_exception(TopicAuthorizationFailedError())
    checkpoint.sends.add([denied])
    with pytest.raises(CheckpointFailed) as raised:
        await checkpoint.run()
    # The worker's _or_exit maps a WorkerExit through access_denied.
    exit_with = access_denied(raised.value)
    assert isinstance(exit_with, AccessDenied)
    assert exit_with.exit_code == EXIT_NOPERM


async def test_pending_sends_forget_the_acknowledged_past_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("app.worker.checkpoint._PRUNE_AT", 4)
    loop = asyncio.get_running_loop()
    sends = PendingSends()
    done: list[Any] = []
    for _ in range(4):
        f = loop.create_future()
        f.set_result(None)
        done.append(f)
    failed = loop.create_future()
    failed.set_exception(KafkaTimeoutError())
    waiting = loop.create_future()
    sends.add([*done, failed, waiting])
    # The acknowledged are dropped; a refusal and a send in flight stay.
    assert sends.take() == [failed, waiting]
    waiting.cancel()


class _GatedChangelog(_Changelog):
    """A changelog whose write waits for ``gate`` (the broker's answer)."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(log)
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()

    async def write(
        self, partition: int, records: Sequence[tuple[bytes, bytes]]
    ) -> int:
        self.writing.set()
        await self.gate.wait()
        return await super().write(partition, records)


async def test_a_checkpoint_whose_task_is_cancelled_still_stores_the_states() -> None:
    """Faust cancels the app's tasks when it stops: the worker's checkpoint
    must not be cut off after it took the dirty states and the events (they
    would then be neither stored nor acked)."""
    from types import SimpleNamespace

    from app.worker.wiring import Worker

    store, log = _Store(), []
    cache = StateCache(store)  # type: ignore[arg-type]
    changelog = _GatedChangelog(log)
    checkpoint = Checkpoint(cache, store, changelog)  # type: ignore[arg-type]

    async def or_exit(work: Any) -> None:
        await work

    worker = SimpleNamespace(
        checkpoint=checkpoint,
        _or_exit=or_exit,
        heap=SimpleNamespace(after_checkpoint=lambda: None, frozen=lambda: 0),
        metrics=SimpleNamespace(heap_frozen=SimpleNamespace(set=lambda _: None)),
    )
    cache.put(0, _state("reg-1"))
    event = _Event("reg-1", log)
    checkpoint.applied([event])
    task = asyncio.get_running_loop().create_task(
        Worker._checkpoint(worker)  # type: ignore[arg-type]
    )
    await changelog.writing.wait()
    task.cancel()  # Faust stops the app's tasks
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cache.take_dirty() == {}  # taken by the checkpoint in flight
    changelog.gate.set()
    async with checkpoint._lock:  # the next checkpoint waits for it
        pass
    await asyncio.sleep(0)  # the shielded checkpoint acks after its lock
    assert log == ["changelog reg-1", "ack reg-1"]
    assert [p for p, _, _ in store.written] == [0]


class _Event:
    """A Faust event (fake): only its ack is used."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def ack(self) -> bool:
        self.log.append(f"ack {self.name}")
        return True


async def test_events_are_acked_only_after_the_states_they_changed_are_stored() -> None:
    checkpoint, cache, store, log = _checkpoint()
    cache.put(0, _state("reg-1"))
    checkpoint.applied([_Event("e1", log), _Event("e2", log)])
    assert store.written == []
    assert not checkpoint.idle
    assert log == []  # nothing acked when handed over

    assert await checkpoint.run() == 2

    assert log == ["changelog reg-1", "ack e1", "ack e2"]
    assert checkpoint.idle
    assert await checkpoint.run() == 0  # each event is acked once


async def test_events_handed_over_during_a_checkpoint_wait_for_the_next() -> None:
    store, log = _Store(), []
    cache = StateCache(store)  # type: ignore[arg-type]
    changelog = _GatedChangelog(log)
    checkpoint = Checkpoint(cache, store, changelog)  # type: ignore[arg-type]
    cache.put(0, _state("reg-1"))
    checkpoint.applied([_Event("e1", log)])
    first = asyncio.get_running_loop().create_task(checkpoint.run())
    await changelog.writing.wait()
    # A batch runs meanwhile: its state and event belong to the next one.
    cache.put(0, _state("reg-2"))
    checkpoint.applied([_Event("e2", log)])
    changelog.gate.set()
    assert await first == 1
    assert log == ["changelog reg-1", "ack e1"]
    assert await checkpoint.run() == 1
    assert log[2:] == ["changelog reg-2", "ack e2"]
