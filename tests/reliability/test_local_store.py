"""A local store ahead of the changelog must not lose updates.

A worker that is killed after writing its RocksDB store but before its
changelog records reach the broker leaves a store that holds effects the
changelog lacks. The offsets of those events are not committed, so they are
delivered again; the restarted worker finds them already applied (duplicates).
If it then wrote nothing, the changelog would never get them and a later
restore from the changelog alone would lose them. This builds that state
exactly, by writing the store of a stopped worker, instead of hoping a kill
lands in the window.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.partitioner import murmur2
from redis import Redis
from rocksdict import Options, Rdict

from app.devstack.stack import DevStack
from app.devstack.workload import simulated
from processors.catalog import Catalog
from processors.registration import (
    with_position,
)
from tests.integration.helpers import produce, wait_until_rows_match
from tests.oracle import expected_states

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _partition(key: str, partitions: int) -> int:
    """aiokafka's default partitioner (the producer's) for a record key."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def test_redelivered_events_already_in_the_local_store_reach_the_changelog(
    stack: DevStack,
) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=12, attempts_per_learner=20, seed=3
    )
    everything = [*workload.registrations, *workload.attempts]
    half = len(workload.attempts) // 2
    first, second = workload.attempts[:half], workload.attempts[half:]
    produce(stack, [*workload.catalog, *workload.registrations, *first])
    worker = stack.start_worker("worker-1")
    wait_until_rows_match(stack, workload, [*workload.registrations, *first])
    stack.stop_worker(worker)

    # The crash window, built by hand: the second half applied in the local
    # store (as by a worker killed before its changelog send and its commit).
    catalog = Catalog()
    for event in workload.catalog:
        catalog.apply(event)
    ahead = expected_states(catalog, everything)
    partitions = stack.settings.topic_partitions
    # Each state at the position of its registration's last record, as the
    # worker keeps it: records of a partition get offsets 0, 1, 2, ... in the
    # order they were produced (registrations and first half, then the rest).
    next_offset = dict.fromkeys(range(partitions), 0)
    last: dict[str, tuple[int, int]] = {}
    for event in everything:
        p = _partition(event.registration_id, partitions)
        last[event.registration_id] = (p, next_offset[p])
        next_offset[p] += 1
    ahead = {reg: with_position(state, *last[reg]) for reg, state in ahead.items()}
    tables = stack.workdir / "worker-1" / "v1" / "tables"
    for p in range(partitions):
        db = Rdict(str(tables / f"registration-state-{p}.db"), Options(raw_mode=True))
        try:
            for reg_id, state in ahead.items():
                if _partition(reg_id, partitions) == p:
                    db[reg_id.encode()] = state.to_bytes()
        finally:
            db.close()

    produce(stack, second)  # ... and its events delivered again
    worker = stack.start_worker("worker-1")
    wait_until_rows_match(stack, workload, everything)
    stack.stop_worker(worker)

    # Only the changelog now: an empty Redis and a worker without local state.
    Redis.from_url(stack.redis.url).flushall()
    worker = stack.start_worker("worker-1", wipe_data=True)
    wait_until_rows_match(stack, workload, everything)


def test_store_path_layout_is_what_the_test_above_writes(stack: DevStack) -> None:
    """Guards the test above: Faust's store files are where it writes them."""
    workload = simulated(
        learning_instances=1, learners_per_instance=4, attempts_per_learner=2, seed=4
    )
    everything = [*workload.registrations, *workload.attempts]
    produce(stack, [*workload.catalog, *everything])
    worker = stack.start_worker("worker-1")
    wait_until_rows_match(stack, workload, everything)
    stack.stop_worker(worker)
    tables = Path(stack.workdir) / "worker-1" / "v1" / "tables"
    found: dict[str, int] = {}
    for p in range(stack.settings.topic_partitions):
        db = Rdict(str(tables / f"registration-state-{p}.db"), Options(raw_mode=True))
        try:
            for key in db.keys():  # noqa: SIM118 (iter(Rdict) fails in raw mode)
                if not key.startswith(b"__faust"):
                    found[key.decode()] = p
        finally:
            db.close()
    partitions = stack.settings.topic_partitions
    assert found == {
        r.registration_id: _partition(r.registration_id, partitions)
        for r in workload.registrations
    }
