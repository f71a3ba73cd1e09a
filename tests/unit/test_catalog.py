"""Catalog projection: definitions, redefinitions, coverage and parameters."""

from __future__ import annotations

import datetime as dt
import itertools

from processors.catalog import Catalog, CatalogChange
from processors.mastery import DEFAULT_PARAMS, Params
from schemas.events import (
    BKTParameters,
    CompletionCriteria,
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    Target,
)

_ids = itertools.count()
NOW = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def instance(li: str = "li-1") -> LearningInstanceCreated:
    return LearningInstanceCreated(
        event_id=f"e{next(_ids)}",
        occurred_at=NOW,
        learning_instance_id=li,
        partner_id="p",
    )


def goal(
    goal_id: str,
    li: str = "li-1",
    objectives: tuple[str, ...] = ("lo-a",),
    **crit: object,
) -> GoalDefined:
    return GoalDefined(
        event_id=f"e{next(_ids)}",
        occurred_at=NOW + dt.timedelta(seconds=next(_ids)),
        goal_id=goal_id,
        learning_instance_id=li,
        targets=[Target(learning_objective_id=o) for o in objectives],
        completion_criteria=CompletionCriteria.model_validate(crit),
    )


def module(
    module_id: str,
    objectives: tuple[str, ...],
    params: dict[str, BKTParameters] | None = None,
) -> ModuleTagged:
    return ModuleTagged(
        event_id=f"e{next(_ids)}",
        occurred_at=NOW,
        module_id=module_id,
        learning_objective_ids=list(objectives),
        parameters=params,
    )


def test_learning_instance_is_recorded() -> None:
    c = Catalog()
    assert c.learning_instance("li-1") is None
    change = c.apply(instance())
    assert change == CatalogChange("learning_instance", "li-1", redefined=False)
    assert c.learning_instance("li-1") is not None


def test_goal_definition_and_identical_redefinition() -> None:
    c = Catalog()
    first = goal("g1")
    assert c.apply(first) == CatalogChange("goal", "g1", redefined=False)
    # Same definition, new event id and time: not a redefinition.
    again = first.model_copy(update={"event_id": "other", "occurred_at": NOW})
    assert c.apply(again).redefined is False
    changed = goal("g1", min_predicted_mastery=0.8)
    assert c.apply(changed).redefined is True
    current = c.goal("g1")
    assert current is not None
    assert current.completion_criteria.min_predicted_mastery == 0.8


def test_goals_of_keeps_first_definition_order() -> None:
    c = Catalog()
    c.apply(goal("g2"))
    c.apply(goal("g1"))
    c.apply(goal("g2", objectives=("lo-b",)))
    assert [g.goal_id for g in c.goals_of("li-1")] == ["g2", "g1"]
    assert [t.id for t in c.goals_of("li-1")[0].targets] == ["lo-b"]
    assert c.goals_of("nope") == []


def test_goal_moved_to_another_instance() -> None:
    c = Catalog()
    c.apply(goal("g1", li="li-1"))
    assert c.apply(goal("g1", li="li-2")).redefined is True
    assert c.goals_of("li-1") == []
    assert [g.goal_id for g in c.goals_of("li-2")] == ["g1"]


def test_module_coverage_follows_retagging() -> None:
    c = Catalog()
    assert c.apply(module("m1", ("lo-a", "lo-b"))).redefined is False
    c.apply(module("m2", ("lo-a",)))
    assert c.modules_covering("lo-a") == frozenset({"m1", "m2"})
    assert c.apply(module("m1", ("lo-a", "lo-b"))).redefined is False
    assert c.apply(module("m1", ("lo-c",))).redefined is True
    assert c.modules_covering("lo-a") == frozenset({"m2"})
    assert c.modules_covering("lo-b") == frozenset()
    assert c.modules_covering("lo-c") == frozenset({"m1"})
    m1 = c.module("m1")
    assert m1 is not None
    assert m1.learning_objective_ids == ["lo-c"]


def test_params_last_definition_wins_else_default() -> None:
    c = Catalog()
    assert c.params_for("lo-a") == DEFAULT_PARAMS
    c.apply(
        module(
            "m1",
            ("lo-a",),
            {"lo-a": BKTParameters(prior=0.5, learn=0.2, guess=0.1, slip=0.1)},
        )
    )
    assert c.params_for("lo-a") == Params(0.5, 0.2, 0.1, 0.1)
    c.apply(
        module(
            "m2",
            ("lo-a",),
            {"lo-a": BKTParameters(prior=0.6, learn=0.2, guess=0.1, slip=0.1)},
        )
    )
    assert c.params_for("lo-a") == Params(0.6, 0.2, 0.1, 0.1)
    # A tagging without parameters keeps the last ones given.
    c.apply(module("m3", ("lo-a",)))
    assert c.params_for("lo-a") == Params(0.6, 0.2, 0.1, 0.1)
    assert c.params_for("lo-b") == DEFAULT_PARAMS
