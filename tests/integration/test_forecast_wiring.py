"""Rows derived while their forecast tables were missing are derived again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.devstack.embedded_kafka import EmbeddedKafka
from app.devstack.stack import DevStack
from app.devstack.workload import simulated
from tests.integration.helpers import produce, started_stack, wait_until_rows_match
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def stack(tmp_path: Path, kafka_server: EmbeddedKafka) -> Iterator[DevStack]:
    with started_stack(kafka_server, tmp_path, "fcw", 2) as s:
        yield s


def test_rows_repaired_after_a_restart_become_exact(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=10, attempts_per_learner=8, seed=5
    )
    events = [*workload.registrations, *workload.attempts]
    produce(stack, [*workload.catalog, *events])
    wait_until_rows_match(stack, workload, events)
    # A new worker starts with no tables: its repair pass derives every row
    # provisionally, then again once the builder has built the tables. No
    # inline coarse builds: provisional rows show the best case, which the
    # oracle (exact forecasts) tells apart.
    stack.stop_worker(stack.workers[0])
    log = stack.log_dir / "worker-1.log"
    repairs = log.read_text().count("re-derived rows of")
    stack.start_worker("worker-1", extra_env={"MASTERY_FORECAST_INLINE_BUILDS": "0"})
    wait_for(
        lambda: log.read_text().count("re-derived rows of") != repairs,
        timeout_s=60.0,
        interval_s=0.1,
        what="the new worker to repair (a new 're-derived rows of' line)",
    )
    wait_until_rows_match(stack, workload, events, timeout_s=30.0)
