"""Kill real worker processes with SIGKILL mid-stream; rows must stay exact."""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

from app.devstack import DevStack
from app.workload import simulated
from tests.integration.helpers import produce, wait_until_rows_match

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _produce_slowly(
    stack: DevStack, events: list, per_second: float
) -> threading.Thread:  # type: ignore[type-arg]
    """Produce in chunks at about ``per_second`` from a background thread."""

    def run() -> None:
        chunk = max(1, int(per_second / 4))
        for start in range(0, len(events), chunk):
            began = time.monotonic()
            produce(stack, events[start : start + chunk])
            time.sleep(max(0.0, 0.25 - (time.monotonic() - began)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _kill(proc: object) -> None:
    proc.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
    proc.wait(timeout=10)  # type: ignore[attr-defined]


def test_sigkill_three_times_loses_and_doubles_nothing(stack: DevStack) -> None:
    rng = random.Random(2026)
    workload = simulated(
        learning_instances=2, learners_per_instance=50, attempts_per_learner=200, seed=5
    )
    assert len(workload.attempts) >= 20_000
    produce(stack, [*workload.catalog, *workload.registrations])
    worker = stack.start_worker("worker-1")
    feeder = _produce_slowly(stack, workload.attempts, per_second=1000)
    kills = []
    for n, wipe in enumerate((False, True, False)):
        time.sleep(rng.uniform(6.0, 9.0))  # past the group join, into processing
        _kill(worker)
        kills.append(time.monotonic())
        # The second restart starts from an empty RocksDB folder: its state
        # must come back from the changelog topic alone.
        worker = stack.start_worker("worker-1", wipe_data=wipe)
        assert worker.poll() is None, f"restart {n} failed"
    feeder.join(timeout=120)
    assert not feeder.is_alive()
    wait_until_rows_match(
        stack,
        workload,
        [*workload.registrations, *workload.attempts],
        per_page=100,
        timeout_s=240,
    )
    assert len(kills) == 3


def test_failover_to_the_surviving_worker(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=2, learners_per_instance=30, attempts_per_learner=60, seed=9
    )
    produce(stack, [*workload.catalog, *workload.registrations])
    first = stack.start_worker("worker-a")
    stack.start_worker("worker-b")
    half = len(workload.attempts) // 2
    produce(stack, workload.attempts[:half])
    wait_until_rows_match(
        stack,
        workload,
        [*workload.registrations, *workload.attempts[:half]],
        per_page=100,
    )
    _kill(first)
    produce(stack, workload.attempts[half:])
    wait_until_rows_match(
        stack,
        workload,
        [*workload.registrations, *workload.attempts],
        per_page=100,
        timeout_s=180,
    )
