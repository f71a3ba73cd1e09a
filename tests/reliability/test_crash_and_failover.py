"""Kill real worker processes with SIGKILL mid-stream; rows must stay exact."""

from __future__ import annotations

import random

import pytest

from app.devstack.stack import DevStack
from app.devstack.workload import simulated
from tests.integration.helpers import produce, wait_until_rows_match
from tests.reliability.crashes import kill, sigkill_three_times

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sigkill_three_times_loses_and_doubles_nothing(stack: DevStack) -> None:
    kills: list[int] = []
    workload = sigkill_three_times(
        stack, random.Random(2026), after_kill=lambda proc: kills.append(proc.pid)
    )
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
    kill(first)
    produce(stack, workload.attempts[half:])
    wait_until_rows_match(
        stack,
        workload,
        [*workload.registrations, *workload.attempts],
        per_page=100,
        timeout_s=180,
    )
