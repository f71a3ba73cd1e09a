"""The oracle: expected rows computed by the pure model from the same events.

It folds the events in one clean pass, in the order a single partition would
deliver them, with no Kafka, Faust, RocksDB or Redis involved.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from processors.catalog import Catalog, PartnerCatalog
from processors.goals import affected_by, evaluate
from processors.history import HistoryPolicy, Point, appended, due, point_of
from processors.registration import (
    RegistrationState,
    apply_attempt,
    epoch_us,
    register,
)
from schemas.events import (
    AttemptGraded,
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    RegistrationCreated,
)

__all__ = [
    "Transition",
    "expected_history",
    "expected_rows",
    "expected_states",
    "expected_transitions",
]

#: (registration, goal, previous status, status, causing event id)
Transition = tuple[str, str, str | None, str, str]


def expected_states(
    catalog: Catalog, registration_events: Iterable[RegistrationCreated | AttemptGraded]
) -> dict[str, RegistrationState]:
    """Every registration's state after the events, folded in one clean pass."""
    states: dict[str, RegistrationState | None] = {}
    for event in registration_events:
        state = states.get(event.registration_id)
        if isinstance(event, RegistrationCreated):
            states[event.registration_id] = register(state, event, catalog).state
        else:
            view = catalog.for_partner(
                None
                if state is None
                else catalog.partner_of(state.learning_instance_id)
            )
            states[event.registration_id] = apply_attempt(state, event, view).state
    return {reg_id: state for reg_id, state in states.items() if state is not None}


def expected_rows(
    catalog_events: Iterable[LearningInstanceCreated | GoalDefined | ModuleTagged],
    registration_events: Iterable[RegistrationCreated | AttemptGraded],
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{registration_id: {goal_id: status_and_progress item}}`` for learners."""
    catalog = Catalog()
    for event in catalog_events:
        catalog.apply(event)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for reg_id, state in expected_states(catalog, registration_events).items():
        if state.role != "learner":
            continue
        view = catalog.for_learning_instance(state.learning_instance_id)
        out[reg_id] = {
            goal.goal_id: evaluate(goal, state, view)
            for goal in view.goals_of(state.learning_instance_id)
        }
    return out


def expected_transitions(
    catalog: Catalog,
    registration_events: Iterable[RegistrationCreated | AttemptGraded],
) -> list[Transition]:
    """Every goal's full row after every single event; a change of status is
    a transition, and a learner's creation gives every goal its first status.
    In log order (the order of ``registration_events``)."""
    statuses: dict[tuple[str, str], str] = {}
    out: list[Transition] = []
    for event, _before, after in _learner_steps(catalog, registration_events):
        reg = event.registration_id
        created = isinstance(event, RegistrationCreated)
        view = catalog.for_learning_instance(after.learning_instance_id)
        for goal in view.goals_of(after.learning_instance_id):
            status = str(evaluate(goal, after, view)["status"])
            announced = (reg, goal.goal_id) in statuses
            previous = statuses.get((reg, goal.goal_id))
            if not created and not announced:
                # A goal the learner's creation did not announce: its first
                # status comes with the first attempt that can change it.
                assert isinstance(event, AttemptGraded)
                if not _can_change(goal, event, view):
                    continue
            statuses[(reg, goal.goal_id)] = status
            if created or not announced or status != previous:
                out.append((reg, goal.goal_id, previous, status, event.event_id))
    return out


def _learner_steps(
    catalog: Catalog,
    registration_events: Iterable[RegistrationCreated | AttemptGraded],
) -> Iterator[
    tuple[
        RegistrationCreated | AttemptGraded, RegistrationState | None, RegistrationState
    ]
]:
    """``(event, state before, state after)`` of every event applied to a
    learner, in one clean pass; renames (a repeated creation) left out."""
    states: dict[str, RegistrationState | None] = {}
    for event in registration_events:
        reg = event.registration_id
        before = states.get(reg)
        if isinstance(event, RegistrationCreated):
            result = register(before, event, catalog)
        else:
            view = catalog.for_partner(
                None
                if before is None
                else catalog.partner_of(before.learning_instance_id)
            )
            result = apply_attempt(before, event, view)
        after = result.state
        states[reg] = after
        if result.outcome != "applied" or after is None or after.role != "learner":
            continue
        if isinstance(event, RegistrationCreated) and before is not None:
            continue  # a rename
        yield event, before, after


def _can_change(goal: GoalDefined, event: AttemptGraded, view: PartnerCatalog) -> bool:
    module = view.module(event.module_id)
    return affected_by(
        goal,
        view,
        modules={event.module_id},
        objectives=set(module.learning_objective_ids) if module else set(),
        goal_ids={event.goal_id} if event.goal_id else set(),
    )


def expected_history(
    catalog: Catalog,
    registration_events: Iterable[RegistrationCreated | AttemptGraded],
    policy: HistoryPolicy,
) -> dict[tuple[str, str], tuple[Point, ...]]:
    """Every learner's timeline per goal, from full rows before and after
    every single event: a point at a learner's creation and at each change
    of a goal's status, else at most one per ``policy.interval_us`` for the
    goals an attempt can change; thinned by :func:`appended`."""
    out: dict[tuple[str, str], tuple[Point, ...]] = {}
    for event, before, after in _learner_steps(catalog, registration_events):
        reg = event.registration_id
        view = catalog.for_learning_instance(after.learning_instance_id)
        at = epoch_us(event.occurred_at)
        for goal in view.goals_of(after.learning_instance_id):
            row = evaluate(goal, after, view)
            key = (reg, goal.goal_id)
            points = out.get(key, ())
            if isinstance(event, RegistrationCreated):
                changed = True
            else:
                if not _can_change(goal, event, view):
                    continue
                changed = row["status"] != evaluate(goal, before, view)["status"]
            if due(points, at, changed, policy):
                out[key] = appended(points, point_of(row, at), policy.max_points)
    return out
