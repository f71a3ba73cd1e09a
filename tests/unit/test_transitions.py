"""Status transitions, event by event (processors/transitions.py).

The oracle (tests/oracle.py, ``expected_transitions``) evaluates every goal's
full row after every single event and lists the status changes; the fold
must give exactly those, in log order, whatever the batch size.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from app.devstack.workload import Workload, assistments, simulated
from processors.batch import Decoded, Record, fold
from processors.catalog import Catalog
from processors.goals import evaluate, goal_status
from processors.registration import RegistrationState, apply_attempt, register
from schemas.events import (
    AttemptGraded,
    GoalDefined,
    ModuleTagged,
    RegistrationCreated,
    Target,
    encode_event,
)
from schemas.transitions import StatusChanged, transition_id
from tests.oracle import Transition, expected_transitions
from tests.unit.test_batch import attempt, created, records, run
from tests.unit.test_registration import NOW, PARTNER, make_catalog

SHARED = Path(
    os.environ.get("MASTERY_SHARED_DIR", Path(__file__).parents[3] / "shared")
)
TRAIN = SHARED / "data" / "assistments2009" / "builder_train.csv"
TOPIC = "t.registration-events.v1"


def _catalog(workload: Workload) -> Catalog:
    catalog = Catalog()
    for event in workload.catalog:
        catalog.apply(event)
    return catalog


def _log(workload: Workload) -> list[Decoded]:
    """The registration topic as one partition delivers it."""
    events: list[RegistrationCreated | AttemptGraded] = [
        *workload.registrations,
        *workload.attempts,
    ]
    return [
        Decoded(
            Record(TOPIC, 0, offset, e.registration_id.encode(), encode_event(e)),
            e,
        )
        for offset, e in enumerate(events)
    ]


def _folded(catalog: Catalog, log: Sequence[Decoded], size: int) -> list[StatusChanged]:
    states: dict[str, RegistrationState | None] = {}
    out: list[StatusChanged] = []
    for start in range(0, len(log), size):
        chunk = log[start : start + size]
        lookup = {d.event.registration_id: None for d in chunk}
        lookup.update(
            {reg: states.get(reg) for reg in lookup}  # type: ignore[misc]
        )
        plan = fold(chunk, lookup, catalog)
        states.update(plan.states)
        out.extend(plan.transitions)
    return out


def _keys(changes: Sequence[StatusChanged]) -> list[Transition]:
    return [
        (c.registration_id, c.goal_id, c.previous_status, c.status, c.event_id)
        for c in changes
    ]


def _assistments_slice() -> Workload:
    if not TRAIN.exists():  # pragma: no cover - the data ships with ../shared
        pytest.fail(f"ASSISTments data missing: {TRAIN}")
    return assistments(TRAIN, max_learners=200, learners_per_instance=30)


Replay = tuple[Catalog, list[Decoded], list[Transition]]


@pytest.fixture(scope="module", params=["assistments", "simulated"])
def replay(request: pytest.FixtureRequest) -> Replay:
    # ASSISTments: real answers, objective targets; the simulated workload:
    # module targets and goal-tagged attempts.
    workload = (
        _assistments_slice()
        if request.param == "assistments"
        else simulated(
            learning_instances=2,
            learners_per_instance=12,
            attempts_per_learner=40,
            seed=9,
        )
    )
    catalog = _catalog(workload)
    log = _log(workload)
    return catalog, log, expected_transitions(catalog, [d.event for d in log])


def test_the_replays_move_statuses_every_way(
    replay: Replay,
) -> None:
    # The comparisons below mean something only if the log moves statuses
    # both ways, struggling included.
    _, _, expected = replay
    kinds = Counter((previous, status) for _, _, previous, status, _ in expected)
    assert kinds[(None, "no_work")] > 0
    assert kinds[("no_work", "in_progress")] > 0
    assert kinds[("in_progress", "struggling")] > 0
    assert kinds[("struggling", "in_progress")] > 0
    assert kinds[("in_progress", "complete")] > 0


@pytest.mark.parametrize("size", [1, 7, 500, 100_000])
def test_folded_transitions_are_the_oracles_whatever_the_batch_size(
    replay: Replay, size: int
) -> None:
    catalog, log, expected = replay
    changes = _folded(catalog, log, size)
    assert _keys(changes) == expected


def test_transitions_carry_their_source_and_a_stable_id(
    replay: Replay,
) -> None:
    catalog, log, _ = replay
    by_event = {d.event.event_id: d for d in log}
    changes = _folded(catalog, log, 50)
    again = _folded(catalog, log, 13)
    assert [c.transition_id for c in changes] == [c.transition_id for c in again]
    assert len({c.transition_id for c in changes}) == len(changes)
    for c in changes[:200]:
        d = by_event[c.event_id]
        assert c.transition_id == transition_id(c.event_id, c.goal_id)
        assert (c.source_partition, c.source_offset) == (
            d.record.partition,
            d.record.offset,
        )
        assert c.occurred_at == d.event.occurred_at
        assert c.partner_id == catalog.partner_of(c.learning_instance_id)
        assert StatusChanged.from_bytes(c.to_bytes()) == c


def _simulated_states() -> Iterator[tuple[object, RegistrationState, object]]:
    workload = simulated(
        learning_instances=2, learners_per_instance=12, attempts_per_learner=40, seed=9
    )
    catalog = _catalog(workload)
    states: dict[str, RegistrationState] = {}
    for reg in workload.registrations:
        state = register(None, reg, catalog).state
        assert state is not None
        states[reg.registration_id] = state
    for event in workload.attempts:
        state = states[event.registration_id]
        view = catalog.for_learning_instance(state.learning_instance_id)
        new = apply_attempt(state, event, view).state
        if new is None:
            continue
        states[event.registration_id] = new
        for goal in view.goals_of(new.learning_instance_id):
            yield goal, new, view


def test_goal_status_is_the_rows_status_without_a_forecast() -> None:
    seen: Counter[str] = Counter()
    for goal, state, view in _simulated_states():
        status = goal_status(goal, state, view)  # type: ignore[arg-type]
        assert status == evaluate(goal, state, view)["status"]  # type: ignore[arg-type]
        seen[status] += 1
    # tagged goals with a work cap reach complete_max_work in this workload
    assert len(seen) >= 4, seen


def test_creation_gives_each_goal_a_first_status_and_instructors_none() -> None:
    catalog = make_catalog()
    goals = [g.goal_id for g in catalog.goals_of("li-1")]
    plan, _ = run(records(created("r1"), key=b"r1"), {}, catalog)
    assert [(c.goal_id, c.previous_status, c.status) for c in plan.transitions] == [
        (g, None, "no_work") for g in goals
    ]
    plan, _ = run(records(created("t1", role="instructor"), key=b"t1"), {}, catalog)
    assert plan.outcomes["applied"] == 1
    assert plan.transitions == []


def test_duplicates_redeliveries_and_rejections_give_no_transition() -> None:
    catalog = make_catalog()
    first, _ = run(
        records(created("r1"), attempt("r1", "a1", correct=True)), {}, catalog
    )
    changed = [c for c in first.transitions if c.previous_status is not None]
    assert changed, "the first attempt moves a goal off no_work"
    state = first.states["r1"]
    # the same attempt id again (a resend), an unknown module (rejected),
    # and the first two records read again (a redelivery)
    plan, _ = run(
        records(
            attempt("r1", "a1", correct=False),
            attempt("r1", module="m-unknown"),
            start=2,
        ),
        {"r1": state},
        catalog,
    )
    assert plan.outcomes["duplicate"] == 1
    assert plan.outcomes["rejected"] == 1
    assert plan.transitions == []
    plan, _ = run(
        records(created("r1"), attempt("r1", "a1", correct=True)),
        {"r1": state},
        catalog,
    )
    assert plan.outcomes["redelivered"] == 2
    assert plan.transitions == []


def test_an_attempt_tagged_with_a_goal_moves_only_that_goal() -> None:
    # Work tagged with a goal counts toward it even on a module outside its
    # targets (docs/analytics.md); no other goal is affected.
    catalog = _catalog_with_module_c()
    first, _ = run(records(created("r1")), {}, catalog)
    plan, _ = run(
        records(attempt("r1", module="m-c", goal="g2"), start=1),
        {"r1": first.states["r1"]},
        catalog,
    )
    assert [(c.goal_id, c.previous_status, c.status) for c in plan.transitions] == [
        ("g2", "no_work", "in_progress")
    ]


def test_a_rename_is_applied_without_a_transition() -> None:
    catalog = make_catalog()
    first, _ = run(records(created("r1")), {}, catalog)
    renamed = encode_event(
        RegistrationCreated(
            event_id="e-rename",
            occurred_at=NOW,
            registration_id="r1",
            learning_instance_id="li-1",
            user_id="u-r1",
            role="learner",
            display_name="Ada Lovelace",
        )
    )
    plan, _ = run(records(renamed, start=1), {"r1": first.states["r1"]}, catalog)
    assert plan.outcomes["applied"] == 1
    assert plan.states["r1"].display_name == "Ada Lovelace"
    assert plan.transitions == []


def test_a_goal_defined_between_batches_is_seen_by_the_next_one() -> None:
    # What an attempt on a module can change is remembered per state of the
    # catalog (Catalog.memo): after a goal on that module's objective is
    # defined, the next batch's attempts must move it.
    catalog = _catalog_with_module_c()
    first, _ = run(records(created("r1"), attempt("r1", module="m-c")), {}, catalog)
    assert first.transitions[-1].goal_id != "g3"
    catalog.apply(
        GoalDefined(
            event_id="d-g3",
            occurred_at=NOW,
            goal_id="g3",
            learning_instance_id="li-1",
            targets=[Target(learning_objective_id="lo-c")],
        )
    )
    plan, _ = run(
        records(*(attempt("r1", module="m-c") for _ in range(12)), start=2),
        {"r1": first.states["r1"]},
        catalog,
    )
    moved = [(c.previous_status, c.status) for c in plan.transitions]
    # g3's first status comes with the first attempt that can change it
    assert moved == [(None, "in_progress"), ("in_progress", "complete")]
    assert (
        goal_status(
            catalog.goal("g3"),  # type: ignore[arg-type]
            plan.states["r1"],
            catalog.for_learning_instance("li-1"),
        )
        == "complete"
    )


def _catalog_with_module_c() -> Catalog:
    catalog = make_catalog()
    catalog.apply(
        ModuleTagged(
            event_id="t-c",
            occurred_at=NOW,
            partner_id=PARTNER,
            module_id="m-c",
            learning_objective_ids=["lo-c"],
        )
    )
    return catalog
