"""Each correction of app/worker/faust_corrections on the real broker (Apache Kafka).

The members are Faust apps built as the worker builds its own
(tests/integration/faust_member.py). Every test here fails when its
correction is swapped for Faust's own behaviour, e.g.
``pytest tests/integration/test_faust_corrections.py --without take-ready``
(tests/switches/without.py lists the names).
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.devstack.embedded_kafka import EmbeddedKafka
from tests.integration.faust_group import Group, new_topic, produce
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    wait_for(condition, timeout_s=timeout_s, interval_s=0.1, what=what)


def _settle(condition: Any, timeout_s: float) -> None:
    """Wait until ``condition()`` or the timeout, whichever comes first."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


def _stats(group: Group, member: int) -> dict[str, Any]:
    path = group.workdir / f"member-{member}.out.stats"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture
def group(kafka_server: EmbeddedKafka, tmp_path: Path) -> Iterator[Group]:
    bootstrap = kafka_server.bootstrap_servers
    g = Group(bootstrap, new_topic(bootstrap, 4), tmp_path)
    yield g
    g.stop_all()
    for log in sorted(tmp_path.glob("member-*.log")):  # shown when a test fails
        print(f"==== {log.name}\n{log.read_text()[-3000:]}")


def test_a_record_is_handed_over_without_waiting_out_the_window(
    group: Group, pytestconfig: pytest.Config
) -> None:
    """``take_ready``: a live record's batch starts when the record is in it.
    Faust's ``take_events`` waits out its whole window (here 1 s) after every
    batch that is not full, so a record waits about half a window."""
    group.start("--within-ms", "1000", *_without(pytestconfig))
    produce(group.bootstrap, group.topic, 1, 4)
    _wait(lambda: len(_latencies(group)) == 4, 120, "the first records")
    for _ in range(12):
        produce(group.bootstrap, group.topic, 1, 1)  # one record at a time
        time.sleep(0.25)
    _wait(lambda: len(_latencies(group)) == 16, 30, "the live records")
    live = _latencies(group)[4:]
    assert statistics.median(live) < 250, live


def _latencies(group: Group) -> list[float]:
    out = group.workdir / "member-1.out"
    lines = out.read_text().splitlines() if out.exists() else []
    return [float(line.split()[2]) for line in lines]


def _without(config: pytest.Config) -> list[str]:
    """The member runs without what the session runs without."""
    return [
        arg for name in config.getoption("--without") for arg in ("--without", name)
    ]


@pytest.fixture
def replayed(group: Group, pytestconfig: pytest.Config) -> dict[str, Any]:
    """One member's stats after it handled a backlog of 20,000 records."""
    produce(group.bootstrap, group.topic, 5000, 4)
    group.start(*_without(pytestconfig))
    _wait(lambda: _stats(group, 1).get("records") == 20_000, 240, "the backlog")
    return _stats(group, 1)


def test_the_fetch_loop_delivers_records_without_a_task_each(
    replayed: dict[str, Any],
) -> None:
    """``_Consumer.wait_first``: Faust's fetch loop awaits mode's
    ``wait_first(callback(message), suspend_flow.wait())`` per record, which
    wraps both (and the service's stop and crash events) in tasks: over five
    per record in a replay. Inline, a record costs a task only when the
    stream's queue is full (0.7 per record in a replay, 2026-12-06)."""
    assert replayed["tasks"] / replayed["records"] < 2, replayed


def test_the_monitor_keeps_no_per_record_bookkeeping(
    replayed: dict[str, Any],
) -> None:
    """``LeanMonitor``: Faust's Monitor counts every record in and out (for
    its web views, off in the worker); the worker's monitor does not."""
    assert replayed["monitor_messages"] == 0, replayed


@pytest.mark.long
def test_no_record_is_skipped_while_members_come_and_go(
    group: Group, pytestconfig: pytest.Config
) -> None:
    """``SkipGuard``: with records in flight, members join and leave eight
    times. Faust's fetch loop sometimes delivers, after a reassignment, the
    record at the committed offset and then one far past it, and commits past
    the records in between (faust-streaming #216/#221;
    docs/upstream/faust-read-offset-skip.md). The guard ends such a member
    (code 75, restarted) before it acks. Without the guard records were lost
    in every run of this scenario, 4 of 4 (2026-12-06)."""
    rng = random.Random(3)
    without = _without(pytestconfig)
    produce(group.bootstrap, group.topic, 500, 4)
    feeding = threading.Event()

    def feed() -> None:
        while not feeding.is_set():
            produce(group.bootstrap, group.topic, 50, 4)
            time.sleep(0.25)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        # A first member whose first batch takes 4 s, stopped mid-batch.
        first = group.start(*without, "--slow-ms", "4000")
        _wait(lambda: group.first_offsets(1), 120, "the first member's batch")
        time.sleep(rng.uniform(0.5, 2.5))
        group.stop(first)
        live = [(n, group.start(*without, "--slow-ms", "20")) for n in (2, 3)]
        for _ in range(6):
            newest = live[-1][0]
            # Until the newest member works, or a member the guard ended (it
            # stays in the group for the session timeout) delays the join.
            _settle(lambda n=newest: bool(group.first_offsets(n)), 120)
            time.sleep(rng.uniform(1, 4))
            _, leaving = live.pop(rng.randrange(len(live)))
            group.stop(leaving)
            live.append((group.started + 1, group.start(*without, "--slow-ms", "20")))
    finally:
        feeding.set()
        feeder.join()
    group.wait_committed_to_end(300)
    stale = sum(
        _stats(group, n).get("stale_dropped", 0) for n in range(1, group.started + 1)
    )
    # For the log: the stale-fetch correction's drops, the guard's restarts.
    print(f"stale records dropped: {stale}; restarts by the guard: {group.restarts}")
    assert group.missing() == {}, f"records skipped ({group.restarts} restarts)"
