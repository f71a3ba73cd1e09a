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


def instance(
    li: str = "li-1", partner: str = "p", title: str | None = None
) -> LearningInstanceCreated:
    return LearningInstanceCreated(
        event_id=f"e{next(_ids)}",
        occurred_at=NOW,
        learning_instance_id=li,
        partner_id=partner,
        title=title,
    )


def with_instances(*lis: str) -> Catalog:
    c = Catalog()
    for li in lis or ("li-1",):
        c.apply(instance(li))
    return c


def goal(
    goal_id: str,
    li: str = "li-1",
    objectives: tuple[str, ...] = ("lo-a",),
    title: str | None = None,
    **crit: object,
) -> GoalDefined:
    return GoalDefined(
        event_id=f"e{next(_ids)}",
        occurred_at=NOW + dt.timedelta(seconds=next(_ids)),
        goal_id=goal_id,
        learning_instance_id=li,
        targets=[Target(learning_objective_id=o) for o in objectives],
        completion_criteria=CompletionCriteria.model_validate(crit),
        title=title,
    )


def module(
    module_id: str,
    objectives: tuple[str, ...],
    params: dict[str, BKTParameters] | None = None,
    partner: str = "p",
    name: str | None = None,
    objective_names: dict[str, str] | None = None,
) -> ModuleTagged:
    return ModuleTagged(
        event_id=f"e{next(_ids)}",
        occurred_at=NOW,
        partner_id=partner,
        module_id=module_id,
        learning_objective_ids=list(objectives),
        parameters=params,
        module_name=name,
        objective_names=objective_names,
    )


def test_learning_instance_is_recorded() -> None:
    c = Catalog()
    assert c.learning_instance("li-1") is None
    change = c.apply(instance())
    assert change == CatalogChange("learning_instance", "li-1", redefined=False)
    assert c.learning_instance("li-1") is not None


def test_goal_definition_and_identical_redefinition() -> None:
    c = with_instances()
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
    c = with_instances()
    c.apply(goal("g2"))
    c.apply(goal("g1"))
    c.apply(goal("g2", objectives=("lo-b",)))
    assert [g.goal_id for g in c.goals_of("li-1")] == ["g2", "g1"]
    assert [t.id for t in c.goals_of("li-1")[0].targets] == ["lo-b"]
    assert c.goals_of("nope") == []


def test_goal_moved_to_another_instance() -> None:
    c = with_instances("li-1", "li-2")
    c.apply(goal("g1", li="li-1"))
    assert c.apply(goal("g1", li="li-2")).redefined is True
    assert c.goals_of("li-1") == []
    assert [g.goal_id for g in c.goals_of("li-2")] == ["g1"]


def test_module_coverage_follows_retagging() -> None:
    c = Catalog()
    v = c.for_partner("p")
    assert c.apply(module("m1", ("lo-a", "lo-b"))).redefined is False
    c.apply(module("m2", ("lo-a",)))
    assert v.modules_covering("lo-a") == frozenset({"m1", "m2"})
    assert c.apply(module("m1", ("lo-a", "lo-b"))).redefined is False
    assert c.apply(module("m1", ("lo-c",))).redefined is True
    assert v.modules_covering("lo-a") == frozenset({"m2"})
    assert v.modules_covering("lo-b") == frozenset()
    assert v.modules_covering("lo-c") == frozenset({"m1"})
    m1 = v.module("m1")
    assert m1 is not None
    assert m1.learning_objective_ids == ["lo-c"]


def test_params_last_definition_wins_else_default() -> None:
    c = Catalog()
    v = c.for_partner("p")
    assert v.params_for("lo-a") == DEFAULT_PARAMS
    c.apply(
        module(
            "m1",
            ("lo-a",),
            {"lo-a": BKTParameters(prior=0.5, learn=0.2, guess=0.1, slip=0.1)},
        )
    )
    assert v.params_for("lo-a") == Params(0.5, 0.2, 0.1, 0.1)
    c.apply(
        module(
            "m2",
            ("lo-a",),
            {"lo-a": BKTParameters(prior=0.6, learn=0.2, guess=0.1, slip=0.1)},
        )
    )
    assert v.params_for("lo-a") == Params(0.6, 0.2, 0.1, 0.1)
    # A tagging without parameters keeps the last ones given.
    c.apply(module("m3", ("lo-a",)))
    assert v.params_for("lo-a") == Params(0.6, 0.2, 0.1, 0.1)
    assert v.params_for("lo-b") == DEFAULT_PARAMS


def test_a_learning_instance_id_stays_with_its_first_partner() -> None:
    c = Catalog()
    assert c.apply(instance("li-1", "pa")).rejected is None
    assert c.apply(instance("li-1", "pa")).rejected is None  # same partner: no-op
    refused = c.apply(instance("li-1", "pb"))
    assert refused.rejected == (
        "learning_instance_id 'li-1' already belongs to another partner "
        "(the first creation keeps it)"
    )
    assert c.partner_of("li-1") == "pa"


def test_a_goal_id_stays_with_its_first_partner() -> None:
    c = Catalog()
    c.apply(instance("li-a", "pa"))
    c.apply(instance("li-b", "pb"))
    c.apply(goal("g1", li="li-b"))
    refused = c.apply(goal("g1", li="li-a", objectives=("lo-z",)))
    assert refused.rejected == (
        "goal_id 'g1' already belongs to another partner "
        "(the first definition keeps it)"
    )
    current = c.goal("g1")
    assert current is not None and current.learning_instance_id == "li-b"
    assert [t.id for t in current.targets] == ["lo-a"]
    assert c.goals_of("li-a") == []
    # The owner sees it; the other partner does not.
    assert c.for_partner("pb").goal("g1") is not None
    assert c.for_partner("pa").goal("g1") is None
    assert c.for_partner("pa").goals_of("li-b") == []


def test_a_goal_needs_a_known_learning_instance() -> None:
    c = Catalog()
    change = c.apply(goal("g1", li="li-nowhere"))
    assert change.rejected == "unknown learning instance 'li-nowhere'"
    assert c.goal("g1") is None and c.goal_owner("g1") is None


def test_modules_objectives_and_parameters_are_per_partner() -> None:
    c = Catalog()
    slow = BKTParameters(prior=0.1, learn=0.05, guess=0.2, slip=0.1)
    c.apply(module("m1", ("lo-1",), partner="pb"))
    # Partner A tags its own m1 with B's objective id and parameters ...
    c.apply(module("m1", ("lo-1", "lo-x"), {"lo-1": slow}, partner="pa"))
    a, b = c.for_partner("pa"), c.for_partner("pb")
    # ... which are A's own: B's module, coverage and parameters are untouched.
    b_m1 = b.module("m1")
    assert b_m1 is not None and b_m1.learning_objective_ids == ["lo-1"]
    assert b.params_for("lo-1") == DEFAULT_PARAMS
    assert b.modules_covering("lo-x") == frozenset()
    assert a.params_for("lo-1") == Params.from_schema(slow)
    assert a.modules_covering("lo-x") == frozenset({"m1"})
    # A view of no partner (unknown learning instance) sees nothing.
    assert c.for_learning_instance("li-nowhere").module("m1") is None


def test_learning_instances_of_a_partner_in_creation_order() -> None:
    c = Catalog()
    for li, partner in (("li-2", "pa"), ("li-1", "pb"), ("li-0", "pa")):
        c.apply(instance(li, partner))
    c.apply(instance("li-1", "pa"))  # refused: stays pb's
    assert c.learning_instances_of("pa") == ["li-2", "li-0"]
    assert c.learning_instances_of("pb") == ["li-1"]
    assert c.learning_instances_of("pc") == []
