"""A worker stopped with SIGTERM (a rolling update, ``docker stop``, Ctrl-C)
checkpoints and exits 0, idle or mid-replay; nothing it held is lost or
counted twice by the worker that takes over.

Exit 75 means "restart me" to a supervisor
(app/worker/faust_corrections/exit_policy.py):
a stop that exits 75 makes a rolling update look like a crash loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.devstack.embedded import free_port
from app.devstack.stack import DevStack
from app.devstack.workload import simulated
from infra.topic_names import TopicNames
from tests.integration.helpers import (
    produce,
    wait_until_committed,
    wait_until_rows_match,
)
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _wait_for(log: Path, pattern: str, timeout_s: float = 90.0) -> None:
    wait_for(
        lambda: re.search(pattern, log.read_text(errors="replace")),
        timeout_s=timeout_s,
        interval_s=0.2,
        what=f"{pattern!r} in {log.name}",
    )


def _uncommitted(stack: DevStack) -> dict[int, int]:
    """Per partition of registration-events: records past the worker group's
    committed offset (a commit comes only after its checkpoint,
    app/worker/checkpoint.py)."""
    topic = TopicNames(stack.settings.topic_prefix).registration_events

    async def read() -> dict[int, int]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.kafka.bootstrap_servers,
            group_id=stack.settings.worker_id,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            partitions = range(stack.settings.topic_partitions)
            tps = [TopicPartition(topic, p) for p in partitions]
            ends = await consumer.end_offsets(tps)
            left = {}
            for tp in tps:
                committed = await consumer.committed(tp) or 0
                left[tp.partition] = ends[tp] - committed
            return left
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _events_counted(port: int) -> float:
    """The events a worker has folded, all outcomes (its /metrics on ``port``)."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:
        text = response.read().decode()
    found = re.findall(r"^mastery_worker_events_total\{.*\} (\S+)$", text, re.M)
    assert found, text[:2000]
    return sum(float(n) for n in found)


def _stop(stack: DevStack, name: str) -> tuple[int, str]:
    """SIGTERM the worker ``name``; its exit code and log."""
    proc = next(p for p in stack.workers if p.poll() is None)
    started = time.monotonic()
    stack.stop_worker(proc)
    print(f"{name} stopped in {time.monotonic() - started:.1f} s")
    assert proc.returncode is not None
    return proc.returncode, (stack.log_dir / f"{name}.log").read_text(errors="replace")


def test_an_idle_worker_stopped_with_sigterm_exits_0(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=10, attempts_per_learner=20, seed=5
    )
    stack.start_worker("worker-1")
    events = [*workload.registrations, *workload.attempts]
    produce(stack, [*workload.catalog, *events])
    wait_until_rows_match(stack, workload, events)
    wait_until_committed(stack)  # idle: everything it read is checkpointed

    code, log = _stop(stack, "worker-1")

    assert "worker exits" not in log, log[-2000:]
    assert code == 0, log[-2000:]
    assert set(_uncommitted(stack).values()) == {0}, "the stop lost a commit"


def test_a_busy_worker_stopped_with_sigterm_exits_0_and_loses_nothing(
    stack: DevStack,
) -> None:
    workload = simulated(
        learning_instances=2,
        learners_per_instance=30,
        attempts_per_learner=1500,
        seed=6,
    )
    events = [*workload.registrations, *workload.attempts]
    produce(stack, [*workload.catalog, *events])  # a backlog to replay
    stack.start_worker("worker-1")
    _wait_for(stack.log_dir / "worker-1.log", r"assigned partitions \[0, 1, 2, 3\]")
    # Mid-replay: a checkpoint has committed part of the backlog, not all.
    total = sum(_uncommitted(stack).values())
    left = wait_for(
        lambda: _uncommitted(stack),
        accept=lambda left: sum(left.values()) < total,
        timeout_s=60,
        interval_s=0.2,
        what=f"a first commit of the {total} records (uncommitted, by partition)",
    )
    assert sum(left.values()) > 0, "the replay ended before the stop: a larger backlog"

    code, log = _stop(stack, "worker-1")
    assert code == 0, log[-2000:]
    assert "worker exits" not in log, log[-2000:]

    stack.start_worker("worker-2")
    wait_until_rows_match(stack, workload, events)  # none lost, none twice


def test_sigterm_while_a_batch_waits_for_redis_exits_0_and_loses_nothing(
    stack: DevStack,
) -> None:
    """The stop lands in a batch for sure: Redis is paused (SIGSTOP), so the
    batch's row writes hang, when the worker gets SIGTERM. Faust's stop waits
    for the batch ("Wait for streams"); Redis comes back after 20 s; the exit
    is 0 and the next worker's rows are exact."""
    workload = simulated(
        learning_instances=1, learners_per_instance=20, attempts_per_learner=40, seed=8
    )
    half = len(workload.attempts) // 2
    first = [*workload.registrations, *workload.attempts[:half]]
    port = free_port()
    stack.start_worker("worker-1", extra_env={"MASTERY_METRICS_PORT": str(port)})
    produce(stack, [*workload.catalog, *first])
    wait_until_rows_match(stack, workload, first)
    counted = _events_counted(port)

    redis_pid = stack.redis.proc.pid
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        produce(stack, workload.attempts[half:])
        # In a batch: it counts a batch's events before it writes the rows,
        # and those writes hang on the paused Redis.
        wait_for(
            lambda: _events_counted(port),
            accept=lambda n: n > counted,
            timeout_s=30,
            retry_on=(OSError,),
            what=f"the worker to count events past {counted}",
        )
        proc = stack.workers[-1]
        proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    if code is None:
        code = proc.wait(timeout=30)
    log = (stack.log_dir / "worker-1.log").read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert "worker exits" not in log, log[-3000:]
    # Faust's stop waited for the batch in hand until Redis came back and
    # committed it (after its checkpoint); the records still queued behind it
    # were left unacked, for the next worker.
    left = _uncommitted(stack)
    print(f"uncommitted after the stop: {left}")
    assert sum(left.values()) < len(workload.attempts) - half, left

    stack.start_worker("worker-2")
    wait_until_rows_match(
        stack, workload, [*workload.registrations, *workload.attempts]
    )
