"""The SIGKILL scenario, shared by its test and by ``bench.crash_soak``."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.devstack.stack import DevStack
from app.devstack.workload import Workload, simulated
from infra.topic_names import AnyEvent
from tests.integration.helpers import produce


def produce_slowly(
    stack: DevStack, events: Sequence[AnyEvent], per_second: float
) -> threading.Thread:
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


async def committed_offsets(
    bootstrap: str, group_id: str, topic: str, partitions: int
) -> list[int | None]:
    """The group's committed offset of each partition of ``topic`` (None: none)."""
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await probe.start()
    try:
        return [
            await probe.committed(TopicPartition(topic, p)) for p in range(partitions)
        ]
    finally:
        await probe.stop()


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def sigkill_three_times(
    stack: DevStack,
    rng: random.Random,
    after_kill: Callable[[subprocess.Popen[bytes]], None] = lambda proc: None,
    *,
    between: tuple[float, float] = (6.0, 9.0),
    per_second: float = 1000,
) -> Workload:
    """20,000 attempts fed at ~``per_second`` while the worker is SIGKILLed
    three times at random moments (``between`` seconds apart) and restarted,
    the second time with its RocksDB folder deleted (its state must come back
    from the changelog alone). Returns once every attempt is produced; the
    caller compares the rows."""
    workload = simulated(
        learning_instances=2, learners_per_instance=50, attempts_per_learner=200, seed=5
    )
    assert len(workload.attempts) >= 20_000
    produce(stack, [*workload.catalog, *workload.registrations])
    worker = stack.start_worker("worker-1")
    feeder = produce_slowly(stack, workload.attempts, per_second=per_second)
    for n, wipe in enumerate((False, True, False)):
        time.sleep(rng.uniform(*between))  # past the group join, into processing
        kill(worker)
        after_kill(worker)
        worker = stack.start_worker("worker-1", wipe_data=wipe)
        assert worker.poll() is None, f"restart {n} failed"
    feeder.join(timeout=120)
    assert not feeder.is_alive()
    return workload
