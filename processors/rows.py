"""A registration's rows: the one derivation of what the read model serves.

Used by the worker's batch fold, its re-derivation after catalog changes and
repairs, and ``mastery rebuild``: every path that writes a row derives it here,
so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import orjson

from processors.catalog import Catalog, PartnerCatalog
from processors.forecaster import SYNCHRONOUS, Forecaster
from processors.goals import affected_by, evaluate
from processors.history import points_json
from processors.registration import RegistrationState
from schemas.events import GoalDefined

__all__ = ["Touched", "derive_rows", "goal_names", "goal_template", "timelines"]


@dataclass(slots=True)
class Touched:
    """What applied attempts touched for one registration (limits re-evaluation)."""

    modules: set[str] = field(default_factory=set)
    objectives: set[str] = field(default_factory=set)
    goal_ids: set[str] = field(default_factory=set)

    def add(self, module_id: str, goal_id: str | None, catalog: PartnerCatalog) -> None:
        self.modules.add(module_id)
        module = catalog.module(module_id)
        if module is not None:
            self.objectives.update(module.learning_objective_ids)
        if goal_id is not None:
            self.goal_ids.add(goal_id)


def derive_rows(
    state: RegistrationState,
    catalog: Catalog,
    touched: Touched | None = None,
    goals: Collection[GoalDefined] | None = None,
    *,
    forecaster: Forecaster = SYNCHRONOUS,
) -> list[tuple[str, bytes]]:
    """``(goal_id, row JSON)`` of the registration's goals.

    Instructors have no rows. With ``touched``, only the goals those attempts
    can change (the others keep their row); with ``goals``, only those goals.
    A deferred ``forecaster`` records the forecast tables provisional rows
    lacked (its ``take_pending``).
    """
    if state.role != "learner":
        return []
    # Everything is read as the learning instance's partner sees it.
    view = catalog.for_learning_instance(state.learning_instance_id)
    rows: list[tuple[str, bytes]] = []
    for goal in view.goals_of(state.learning_instance_id):
        if goals is not None and goal not in goals:
            continue
        if touched is not None and not affected_by(
            goal,
            view,
            modules=touched.modules,
            objectives=touched.objectives,
            goal_ids=touched.goal_ids,
        ):
            continue
        row = evaluate(goal, state, view, forecaster=forecaster)
        rows.append((goal.goal_id, orjson.dumps(row)))
    return rows


def timelines(
    state: RegistrationState, goal_ids: Collection[str] | None = None
) -> list[tuple[str, bytes]]:
    """``(goal_id, timeline JSON)`` of the registration's goals that have one
    (processors/history.py), or of ``goal_ids`` among them."""
    return [
        (goal_id, points_json(points))
        for goal_id, points in state.history.items()
        if goal_ids is None or goal_id in goal_ids
    ]


def goal_template(
    goal: GoalDefined, catalog: Catalog, *, forecaster: Forecaster = SYNCHRONOUS
) -> bytes:
    """The row of a learner without attempts (served until its first row)."""
    view = catalog.for_learning_instance(goal.learning_instance_id)
    return orjson.dumps(evaluate(goal, None, view, forecaster=forecaster))


def goal_names(goal: GoalDefined, catalog: Catalog) -> bytes:
    """JSON ``{"title": ..., "targets": {id: name}}``: the display names the
    catalog has for the goal and its targets (modules' and objectives' names
    from the partner's ``ModuleTagged``); absent names are left out."""
    view = catalog.for_learning_instance(goal.learning_instance_id)
    names: dict[str, object] = {}
    if goal.title is not None:
        names["title"] = goal.title
    targets = {
        target.id: name
        for target in goal.targets
        if (name := view.target_name(target.kind, target.id)) is not None
    }
    if targets:
        names["targets"] = targets
    return orjson.dumps(names)
