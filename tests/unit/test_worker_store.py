"""The worker reads a registration from its own partition of the RocksDB store."""

from __future__ import annotations

import weakref
from pathlib import Path
from types import SimpleNamespace

from faust.streams import _current_event

from app.worker import create_worker
from infra.broker import TANSU
from infra.settings import Settings
from processors.registration import RegistrationState


class _Event:
    """Stands in for a Faust event: only its record's position matters here."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(
            topic="t.registration-events.v1", partition=partition, offset=5
        )


def test_load_names_the_registrations_event_not_the_batchs_last(tmp_path: Path) -> None:
    worker = create_worker(
        Settings(data_dir=str(tmp_path), topic_prefix="t"),
        TANSU,
        "127.0.0.1:1",  # never contacted: the worker is not started
        "redis://127.0.0.1:1",
    )
    state = RegistrationState("reg", "li", "u", "learner")
    on_partition_1, on_partition_0 = _Event(1), _Event(0)
    token = _current_event.set(weakref.ref(on_partition_1))
    try:
        worker.states.data[b"reg"] = state.to_bytes()  # stored in partition 1
    finally:
        _current_event.reset(token)

    # Inside a take_events batch Faust's "current event" is the batch's last
    # one, here of partition 0.
    token = _current_event.set(weakref.ref(on_partition_0))
    try:
        assert worker.states.get(b"reg") is None  # Faust's own read misses it
        assert worker._load("reg", on_partition_1) == state
    finally:
        _current_event.reset(token)
