"""Status changes, event by event: what the webhooks and the history act on.

The batch fold derives a registration's rows once per batch, after all its
records; a status that changes and changes back inside one batch never shows
in them. Transitions are derived per event instead, so they are the same
however the records are batched (tests/unit/test_transitions.py folds one log
in batches of 1, 7 and 500 and compares):

- an applied attempt compares the status of every goal the attempt can
  change (:func:`processors.goals.affected_by`) before and after it
  (:func:`processors.goals.goal_status`: the rows' own rule, without the
  forecast, which a status does not depend on);
- a registration's creation gives each goal of its learning instance a first
  transition, from ``None`` to its status (a learner's first row); a goal
  defined later gets its ``None`` transition at the first attempt that can
  change it (the learner's timeline has no point on it yet:
  processors/history.py);
- duplicates, redeliveries, rejections, renames and instructors give none.

A catalog change (a goal redefined, new parameters) changes no registration
event, so it gives no transition: the next event of the registration compares
against the status under the current catalog. docs/webhooks.md says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from processors.catalog import Catalog, PartnerCatalog
from processors.goals import StatusScope, affected_by, scoped_status, status_scope
from processors.registration import RegistrationState
from schemas.events import AttemptGraded, GoalDefined, RegistrationCreated
from schemas.transitions import StatusChanged, transition_id

__all__ = ["Transitions"]


class Transitions:
    """Collects one batch's transitions (the fold owns one per batch).

    Remembers each (registration, goal)'s status as of the last event it
    evaluated, so a run of attempts evaluates each status once per attempt.
    The catalog must not change while it is in use (a fold does not change it).
    """

    __slots__ = ("_affected", "_first_from_history", "_scopes", "_status", "changes")

    def __init__(self, catalog: Catalog, *, first_from_history: bool = False) -> None:
        self.changes: list[StatusChanged] = []
        self._status: dict[tuple[str, str], str] = {}
        # What a goal's status reads, and which goals an attempt on a module
        # can change, are looked up once per state of the catalog.
        self._affected: dict[
            tuple[str, str, str | None], Sequence[tuple[GoalDefined, StatusScope]]
        ] = catalog.memo("transitions.affected")
        self._scopes: dict[str, StatusScope] = catalog.memo("transitions.scopes")
        # With timelines, a goal without a point has had no announced status.
        self._first_from_history = first_from_history

    def _scope(self, goal: GoalDefined, view: PartnerCatalog) -> StatusScope:
        scope = self._scopes.get(goal.goal_id)
        if scope is None:
            scope = self._scopes[goal.goal_id] = status_scope(goal, view)
        return scope

    def registered(
        self,
        state: RegistrationState,
        event: RegistrationCreated,
        catalog: Catalog,
        *,
        partition: int,
        offset: int,
    ) -> Sequence[GoalDefined]:
        """A new learner's first statuses, one per goal of its instance (the
        goals, for the history's first points)."""
        if state.role != "learner":
            return ()
        li_id = state.learning_instance_id
        view = catalog.for_learning_instance(li_id)
        goals = view.goals_of(li_id)
        for goal in goals:
            status = scoped_status(self._scope(goal, view), state)
            self._status[(state.registration_id, goal.goal_id)] = status
            self._add(
                state,
                view,
                goal,
                event,
                previous=None,
                status=status,
                partition=partition,
                offset=offset,
            )
        return goals

    def attempted(
        self,
        before: RegistrationState,
        after: RegistrationState,
        event: AttemptGraded,
        view: PartnerCatalog,
        *,
        partition: int,
        offset: int,
    ) -> list[tuple[GoalDefined, bool]]:
        """Records the goals whose status the applied attempt changed; returns
        every goal it can change, with whether its status changed."""
        if after.role != "learner":
            return []
        reg_id = after.registration_id
        affected: list[tuple[GoalDefined, bool]] = []
        for goal, scope in self._goals_affected(
            after.learning_instance_id, event, view
        ):
            key = (reg_id, goal.goal_id)
            status = scoped_status(scope, after)
            first = self._first_from_history and goal.goal_id not in after.history
            if first:
                # No point yet: the goal was defined after the learner
                # registered (or the state predates timelines). Its first
                # status is announced as such, whatever it is.
                previous: str | None = None
            else:
                previous = self._status.get(key)
                if previous is None:
                    previous = scoped_status(scope, before)
            self._status[key] = status
            if first or status != previous:
                self._add(
                    after,
                    view,
                    goal,
                    event,
                    previous=previous,
                    status=status,
                    partition=partition,
                    offset=offset,
                )
            affected.append((goal, first or status != previous))
        return affected

    def _goals_affected(
        self, li_id: str, event: AttemptGraded, view: PartnerCatalog
    ) -> Sequence[tuple[GoalDefined, StatusScope]]:
        key = (li_id, event.module_id, event.goal_id)
        goals = self._affected.get(key)
        if goals is None:
            module = view.module(event.module_id)
            objectives = () if module is None else module.learning_objective_ids
            goal_ids = () if event.goal_id is None else (event.goal_id,)
            goals = [
                (goal, self._scope(goal, view))
                for goal in view.goals_of(li_id)
                if affected_by(
                    goal,
                    view,
                    modules=(event.module_id,),
                    objectives=objectives,
                    goal_ids=goal_ids,
                )
            ]
            self._affected[key] = goals
        return goals

    def _add(
        self,
        state: RegistrationState,
        view: PartnerCatalog,
        goal: GoalDefined,
        event: RegistrationCreated | AttemptGraded,
        *,
        previous: str | None,
        status: str,
        partition: int,
        offset: int,
    ) -> None:
        """A status change of ``goal`` caused by ``event`` (at its position)."""
        self.changes.append(
            StatusChanged.model_validate(
                {
                    "transition_id": transition_id(event.event_id, goal.goal_id),
                    "partner_id": view.partner_id or "",
                    "learning_instance_id": state.learning_instance_id,
                    "registration_id": state.registration_id,
                    "user_id": state.user_id,
                    "goal_id": goal.goal_id,
                    "previous_status": previous,
                    "status": status,
                    "occurred_at": event.occurred_at,
                    "event_id": event.event_id,
                    "source_partition": partition,
                    "source_offset": offset,
                }
            )
        )
