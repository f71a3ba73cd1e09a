"""One partner's costly forecasts do not hold another's rows back (issue 10, 2).

Partner A tags its module with the costliest parameters the bounds allow
(learn = guess = slip = 1e-4) and defines 20 goals on it, each with another
mastery threshold and 30 items of required work: 20 forecast chains that took
about 2.7 s and 376 MB each when they were built on the worker's event loop
(54 s and several GB in all). Partner B's row must still follow B's attempt
within seconds, the worker's peak memory must stay bounded, and A's rows must
end exactly as the synchronous forecast gives them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from redis import Redis

from app.devstack.stack import DevStack
from infra.read_model import ReadModelKeys
from schemas.events import (
    AttemptGraded,
    BKTParameters,
    CompletionCriteria,
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    RegistrationCreated,
    Target,
)
from tests.integration.helpers import produce
from tests.oracle import expected_rows
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = ReadModelKeys()
T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
WORST = BKTParameters(prior=0.5, learn=0.0001, guess=0.0001, slip=0.0001)
GOALS = 20


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _attempt(reg: str, module: str, n: int, correct: bool = True) -> AttemptGraded:
    at = T0 + timedelta(minutes=n)
    return AttemptGraded(
        event_id=f"e-{reg}-{n}",
        occurred_at=at,
        attempt_id=f"a-{reg}-{n}",
        registration_id=reg,
        module_id=module,
        is_correct=correct,
        interaction_end_time=at,
    )


def test_a_partners_costly_forecasts_do_not_hold_back_another_partners_rows(
    stack: DevStack,
) -> None:
    catalog: list[LearningInstanceCreated | GoalDefined | ModuleTagged] = []
    for p in ("a", "b"):
        catalog.append(
            LearningInstanceCreated(
                event_id=f"li-{p}",
                occurred_at=T0,
                learning_instance_id=f"li-{p}",
                partner_id=f"p{p}",
            )
        )
        catalog.append(
            ModuleTagged(
                event_id=f"mod-{p}",
                occurred_at=T0,
                partner_id=f"p{p}",
                module_id=f"mod-{p}",
                learning_objective_ids=[f"lo-{p}"],
                parameters={f"lo-{p}": WORST} if p == "a" else None,
            )
        )
    for i in range(GOALS):
        catalog.append(
            GoalDefined(
                event_id=f"goal-a{i}",
                occurred_at=T0,
                goal_id=f"goal-a{i}",
                learning_instance_id="li-a",
                targets=[Target(learning_objective_id="lo-a")],
                completion_criteria=CompletionCriteria(
                    min_predicted_mastery=0.9999 - i * 1e-5, min_work_per_target=30
                ),
            )
        )
    catalog.append(
        GoalDefined(
            event_id="goal-b",
            occurred_at=T0,
            goal_id="goal-b",
            learning_instance_id="li-b",
            targets=[Target(learning_objective_id="lo-b")],
        )
    )
    registrations = [
        RegistrationCreated(
            event_id=f"r-{p}",
            occurred_at=T0,
            registration_id=f"reg-{p}",
            learning_instance_id=f"li-{p}",
            user_id=f"u-{p}",
            role="learner",
        )
        for p in ("b", "a")
    ]
    worker = stack.start_worker()
    produce(stack, [*catalog, *registrations])
    redis = Redis.from_url(stack.redis.url)
    b_row = KEYS.row("li-b", "reg-b", "goal-b")
    wait_for(
        lambda: redis.exists(b_row),
        timeout_s=60,
        interval_s=0.1,
        what="B's learner to be projected",
    )
    before = redis.get(b_row)

    # A's attempts need all 20 chains; B's attempt comes right behind them.
    a_attempts = [_attempt("reg-a", "mod-a", n, n % 3 != 1) for n in range(5)]
    produce(stack, a_attempts)
    sent = time.monotonic()
    b_attempt = _attempt("reg-b", "mod-b", 0)
    produce(stack, [b_attempt])
    wait_for(
        lambda: redis.get(b_row) != before,
        timeout_s=30,
        interval_s=0.02,
        what="B's row to follow its attempt",
    )
    b_latency = time.monotonic() - sent
    # Built on the event loop, the 20 chains held every batch for ~54 s.
    assert b_latency < 5.0, b_latency

    # A's rows end exact: provisional first, then derived again once built.
    expected = expected_rows(catalog, [*registrations, *a_attempts, b_attempt])
    wait_for(
        lambda: {
            f"goal-a{i}": orjson.loads(
                redis.get(KEYS.row("li-a", "reg-a", f"goal-a{i}")) or b"null"
            )
            for i in range(GOALS)
        },
        accept=lambda served: served == expected["reg-a"],
        timeout_s=90,
        interval_s=0.5,
        what="A's rows to become exact",
    )
    assert orjson.loads(redis.get(b_row) or b"null") == expected["reg-b"]["goal-b"]
    # 20 chains of up to ~60 MB each, under the default 256 MiB budget.
    peak = _peak_rss_mb(worker.pid)
    assert peak < 900, f"worker peak RSS {peak:.0f} MB"
    assert worker.poll() is None
