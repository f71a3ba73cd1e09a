"""Display names (issue 21, point 3): optional on the catalog and
registration events, kept by the catalog and the registration state without
counting as a redefinition, and derived into a goal's names for the
dashboard."""

from __future__ import annotations

import datetime as dt
import itertools

import orjson
import pytest
from pydantic import ValidationError

from processors.catalog import Catalog
from processors.registration import RegistrationState, apply_attempt, register
from processors.rows import goal_names
from schemas.events import (
    AttemptGraded,
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    RegistrationCreated,
    Target,
    decode_event,
    encode_event,
)

_ids = itertools.count()
NOW = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)


def _li(title: str | None = None, partner: str = "p") -> LearningInstanceCreated:
    return LearningInstanceCreated(
        event_id=f"e{next(_ids)}",
        occurred_at=NOW,
        learning_instance_id="li-1",
        partner_id=partner,
        title=title,
    )


def _goal(title: str | None = None, **more: object) -> GoalDefined:
    fields: dict[str, object] = {
        "targets": [Target(learning_objective_id=o) for o in ("lo-a", "lo-b")],
        **more,
    }
    return GoalDefined(
        event_id=f"e{next(_ids)}",
        occurred_at=NOW,
        goal_id="goal-1",
        learning_instance_id="li-1",
        title=title,
        **fields,  # type: ignore[arg-type]
    )


def _module(
    module_id: str = "m-1",
    objectives: tuple[str, ...] = ("lo-a",),
    name: str | None = None,
    objective_names: dict[str, str] | None = None,
) -> ModuleTagged:
    return ModuleTagged(
        event_id=f"e{next(_ids)}",
        occurred_at=NOW,
        partner_id="p",
        module_id=module_id,
        learning_objective_ids=list(objectives),
        module_name=name,
        objective_names=objective_names,
    )


def _registration(name: str | None, user: str = "u-1") -> RegistrationCreated:
    return RegistrationCreated(
        event_id=f"e{next(_ids)}",
        occurred_at=NOW,
        registration_id="reg-1",
        learning_instance_id="li-1",
        user_id=user,
        role="learner",
        display_name=name,
    )


@pytest.mark.parametrize(
    "name", ["", "   ", "a\u200bb", "line\nbreak", "tab\tin", "x" * 201]
)
def test_a_display_name_is_refused_when_blank_invisible_or_too_long(name: str) -> None:
    with pytest.raises(ValidationError):
        _registration(name)


def test_display_names_are_optional_and_survive_the_wire() -> None:
    named = _registration("Zoë O'Hara-Nguyễn")
    assert decode_event(encode_event(named)) == named
    # Without names an event encodes as it did before names existed.
    plain = orjson.loads(encode_event(_registration(None)))
    assert "display_name" not in plain


def test_objective_names_only_for_tagged_objectives() -> None:
    with pytest.raises(ValidationError, match="objective_names given for objectives"):
        _module(objectives=("lo-a",), objective_names={"lo-z": "Zeta"})


def test_a_name_change_is_kept_but_is_no_redefinition() -> None:
    catalog = Catalog()
    catalog.apply(_li("Algebra"))
    assert not catalog.apply(_goal("Fractions")).redefined
    change = catalog.apply(_goal("Fractions and decimals"))
    assert not change.redefined, "rows need no re-derivation for a new title"
    goal = catalog.goal("goal-1")
    assert goal is not None and goal.title == "Fractions and decimals"
    # A real redefinition still is one.
    moved = _goal("Fractions and decimals", topics={"t": ["lo-a"]})
    assert catalog.apply(moved).redefined

    catalog.apply(_module(name="Practice"))
    assert not catalog.apply(_module(name="Practice, part 1")).redefined
    module = catalog.for_partner("p").module("m-1")
    assert module is not None and module.module_name == "Practice, part 1"


def test_the_owner_renames_a_learning_instance_another_partner_cannot() -> None:
    catalog = Catalog()
    catalog.apply(_li("Algebra I"))
    catalog.apply(_li("Algebra I, fall"))
    li = catalog.learning_instance("li-1")
    assert li is not None and li.title == "Algebra I, fall" and li.partner_id == "p"
    assert catalog.apply(_li("Hijacked", partner="q")).rejected
    li = catalog.learning_instance("li-1")
    assert li is not None and li.title == "Algebra I, fall"


def test_a_goal_s_names_come_from_its_title_and_the_partner_s_modules() -> None:
    catalog = Catalog()
    catalog.apply(_li())
    # lo-a is named by the review module (first by id among those naming it);
    # lo-b is tagged but named nowhere.
    catalog.apply(_module("m-2", ("lo-a", "lo-b"), objective_names={"lo-a": "Ratios"}))
    catalog.apply(_module("m-9", ("lo-a",), objective_names={"lo-a": "Ratios (old)"}))
    catalog.apply(_goal("Number sense"))
    goal = catalog.goal("goal-1")
    assert goal is not None
    assert orjson.loads(goal_names(goal, catalog)) == {
        "title": "Number sense",
        "targets": {"lo-a": "Ratios"},
    }
    catalog.apply(_module("m-5", ("lo-c",), name="Equations"))
    modules = GoalDefined(
        event_id="e-mod",
        occurred_at=NOW,
        goal_id="goal-2",
        learning_instance_id="li-1",
        targets=[Target(module_id="m-5"), Target(module_id="m-6")],
    )
    catalog.apply(modules)
    assert orjson.loads(goal_names(modules, catalog)) == {
        "targets": {"m-5": "Equations"}
    }


def test_a_registration_keeps_its_name_and_a_repeat_renames_it() -> None:
    catalog = Catalog()
    catalog.apply(_li())
    first = register(None, _registration("Ada L."), catalog)
    assert first.outcome == "applied" and first.state is not None
    assert first.state.display_name == "Ada L."
    same = register(first.state, _registration("Ada L."), catalog)
    assert same.outcome == "duplicate"
    renamed = register(first.state, _registration("Ada Lovelace"), catalog)
    assert renamed.outcome == "applied" and renamed.state is not None
    assert renamed.state.display_name == "Ada Lovelace"
    # Attempts keep the name.
    catalog.apply(_module("m-1", ("lo-a",)))
    attempt = AttemptGraded(
        event_id="e-att",
        occurred_at=NOW,
        registration_id="reg-1",
        attempt_id="att-1",
        module_id="m-1",
        is_correct=True,
        interaction_end_time=NOW,
    )
    applied = apply_attempt(
        renamed.state, attempt, catalog.for_learning_instance("li-1")
    )
    assert applied.outcome == "applied" and applied.state is not None
    assert applied.state.display_name == "Ada Lovelace"
    removed = register(renamed.state, _registration(None), catalog)
    assert removed.state is not None and removed.state.display_name is None
    # Another user under the same id is still refused.
    assert register(first.state, _registration("Eve", user="u-2"), catalog).outcome == (
        "rejected"
    )


def test_a_state_without_a_name_is_stored_as_before_names() -> None:
    plain = RegistrationState("reg-1", "li-1", "u-1", "learner", created_us=5)
    data = plain.to_bytes()
    assert orjson.loads(data)[0] == 4, "format 4: older workers still read it"
    assert RegistrationState.from_bytes(data) == plain
    named = RegistrationState(
        "reg-1", "li-1", "u-1", "learner", created_us=5, display_name="Ada L."
    )
    named_data = named.to_bytes()
    fields = orjson.loads(named_data)
    assert fields[0] == 5 and fields[1:13] == orjson.loads(data)[1:13]
    assert fields[13] == "Ada L."
    assert RegistrationState.from_bytes(named_data) == named
