"""Each learner's timeline per goal (processors/history.py, the fold's points).

The oracle (tests/oracle.py, ``expected_history``) evaluates every goal's
full row before and after every single event; the fold, in batches of any
size, must keep exactly its timelines.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import pytest

from app.devstack.workload import Workload, simulated
from processors.batch import Decoded, fold
from processors.catalog import Catalog
from processors.history import (
    MAX_POINTS,
    HistoryPolicy,
    Point,
    appended,
    due,
    points_json,
)
from processors.registration import RegistrationState
from tests.oracle import expected_history
from tests.unit.test_transitions import _assistments_slice, _catalog, _log

HOUR = 3600 * 1_000_000
SECOND = 1_000_000


def _fold(
    catalog: Catalog, log: Sequence[Decoded], size: int, policy: HistoryPolicy
) -> dict[str, RegistrationState]:
    states: dict[str, RegistrationState] = {}
    for start in range(0, len(log), size):
        chunk = log[start : start + size]
        lookup: dict[str, RegistrationState | None] = {
            d.event.registration_id: states.get(d.event.registration_id) for d in chunk
        }
        plan = fold(chunk, lookup, catalog, history=policy)
        states.update(plan.states)
    return states


def _timelines(
    states: dict[str, RegistrationState],
) -> dict[tuple[str, str], tuple[Point, ...]]:
    return {
        (reg, goal): points
        for reg, state in states.items()
        for goal, points in state.history.items()
    }


def _simulated() -> Workload:
    # the simulated clock moves 250 ms per event (all learners interleaved):
    # a learner's attempts are seconds apart, so intervals of seconds matter
    return simulated(
        learning_instances=2, learners_per_instance=10, attempts_per_learner=60, seed=3
    )


@pytest.fixture(scope="module", params=["assistments", "simulated"])
def replay(request: pytest.FixtureRequest) -> tuple[Catalog, list[Decoded]]:
    workload = _assistments_slice() if request.param == "assistments" else _simulated()
    return _catalog(workload), _log(workload)


_oracles: dict[tuple[int, int], dict[tuple[str, str], tuple[Point, ...]]] = {}


@pytest.mark.parametrize("size", [1, 9, 100_000])
@pytest.mark.parametrize("interval_us", [0, 5 * SECOND, HOUR])
def test_the_folded_timelines_are_the_oracles_whatever_the_batch_size(
    replay: tuple[Catalog, list[Decoded]], size: int, interval_us: int
) -> None:
    catalog, log = replay
    policy = HistoryPolicy(interval_us=interval_us, max_points=12)
    key = (id(log), interval_us)
    if key not in _oracles:
        _oracles[key] = expected_history(catalog, [d.event for d in log], policy)
    expected = _oracles[key]
    assert expected, "the replay has timelines"
    assert _timelines(_fold(catalog, log, size, policy)) == expected


def test_points_are_spaced_by_the_interval_unless_the_status_changed() -> None:
    workload = _simulated()
    catalog, log = _catalog(workload), _log(workload)
    policy = HistoryPolicy(interval_us=20 * SECOND)
    timelines = _timelines(_fold(catalog, log, 50, policy))
    pairs = [(a, b) for points in timelines.values() for a, b in pairwise(points)]
    same = [(a, b) for a, b in pairs if a[1] == b[1]]
    assert same, "the workload has points without a status change"
    assert all(b[0] - a[0] >= policy.interval_us for a, b in same)
    # without an interval, every attempt on a goal is a point (up to the bound)
    dense = _timelines(_fold(catalog, log, 50, HistoryPolicy(interval_us=0)))
    assert sum(map(len, dense.values())) > sum(map(len, timelines.values()))


def test_a_timeline_is_bounded_and_keeps_its_ends_and_status_changes() -> None:
    def minutes(changes: set[int]) -> tuple[Point, ...]:
        points: tuple[Point, ...] = ()
        for i in range(100):  # a point a minute
            status = 2 if i in changes else 1
            points = appended(points, (i * 60_000_000, status, i / 100, 100 - i), 8)
            assert len(points) <= 8
        return points

    steady = minutes(set())
    assert len(steady) == 8
    assert steady[0][0] == 0  # the first point stays
    assert steady[-1][0] == 99 * 60_000_000  # and the newest
    times = [p[0] for p in steady]
    assert times == sorted(times)
    # thinning spreads the kept points: no two of the older ones a minute apart
    assert min(b - a for a, b in pairwise(times[:-1])) > 60_000_000
    # a status change (to 2 at minute 50, back at 51) outlives steady points
    changed = minutes({50})
    assert [p[0] for p in changed if p[1] == 2] == [50 * 60_000_000]
    assert 51 * 60_000_000 in [p[0] for p in changed]


def test_the_default_bound_and_the_served_json() -> None:
    points = (
        (0, 0, 0.0, -1),
        (1_700_000_000_000_000, 1, 0.25, 9),
    )
    assert MAX_POINTS == 32
    assert points_json(points) == (
        b'[{"at":"1970-01-01T00:00:00.000000+00:00","status":"no_work",'
        b'"progress":0.0,"work_remaining":-1},'
        b'{"at":"2023-11-14T22:13:20.000000+00:00","status":"in_progress",'
        b'"progress":0.25,"work_remaining":9}]'
    )


def test_due() -> None:
    policy = HistoryPolicy(interval_us=10)
    assert due((), 0, False, policy)  # the first point
    last: tuple[Point, ...] = ((100, 1, 0.5, 3),)
    assert due(last, 101, True, policy)  # a status change
    assert not due(last, 109, False, policy)
    assert due(last, 110, False, policy)
    with pytest.raises(ValueError):
        HistoryPolicy(max_points=1)


def test_a_state_with_a_timeline_survives_its_bytes() -> None:
    workload = _simulated()
    catalog, log = _catalog(workload), _log(workload)
    states = _fold(catalog, log, 100, HistoryPolicy(interval_us=20 * SECOND))
    with_history = [s for s in states.values() if s.history]
    assert with_history
    for state in with_history:
        assert RegistrationState.from_bytes(state.to_bytes()) == state
        assert state.to_bytes()[:2] == b"[6"
    # without a timeline the bytes are those of format 4 or 5, as before
    plain = [s for s in states.values() if not s.history]
    for state in plain:
        assert state.to_bytes()[:2] in (b"[4", b"[5")


def test_no_history_policy_keeps_no_timeline() -> None:
    workload = _simulated()
    catalog, log = _catalog(workload), _log(workload)
    states: dict[str, RegistrationState | None] = {
        d.event.registration_id: None for d in log
    }
    plan = fold(log, states, catalog, history=None)
    assert plan.states and all(not s.history for s in plan.states.values())
    assert plan.history == []
