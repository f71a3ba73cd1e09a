"""Display names (issue 21, point 3): optional on the catalog and
registration events, kept by the catalog and the registration state without
counting as a redefinition, and derived into a goal's names for the
dashboard. Events are built by the catalog's and the registration's test
helpers (tests/unit/test_catalog.py, tests/unit/test_registration.py)."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from processors.catalog import Catalog
from processors.registration import RegistrationState, register
from processors.rows import goal_names
from schemas.events import GoalDefined, Target, decode_event, encode_event
from tests.unit.test_catalog import NOW, goal, instance, module
from tests.unit.test_registration import attempt, attempt_on, created, make_catalog


@pytest.mark.parametrize(
    "name", ["", "   ", "a\u200bb", "line\nbreak", "tab\tin", "x" * 201]
)
def test_a_display_name_is_refused_when_blank_invisible_or_too_long(name: str) -> None:
    with pytest.raises(ValidationError):
        created(display_name=name)


def test_display_names_are_optional_and_survive_the_wire() -> None:
    named = created(display_name="Zoë O'Hara-Nguyễn")
    assert decode_event(encode_event(named)) == named
    # Without names an event encodes as it did before names existed.
    assert "display_name" not in orjson.loads(encode_event(created()))


def test_objective_names_only_for_tagged_objectives() -> None:
    with pytest.raises(ValidationError, match="objective_names given for objectives"):
        module("m-1", ("lo-a",), objective_names={"lo-z": "Zeta"})


def test_a_name_change_is_kept_but_is_no_redefinition() -> None:
    catalog = Catalog()
    catalog.apply(instance(title="Algebra"))
    assert not catalog.apply(goal("goal-1", title="Fractions")).redefined
    change = catalog.apply(goal("goal-1", title="Fractions and decimals"))
    assert not change.redefined, "rows need no re-derivation for a new title"
    stored = catalog.goal("goal-1")
    assert stored is not None and stored.title == "Fractions and decimals"
    # A real redefinition still is one.
    moved = goal("goal-1", title="Fractions and decimals", min_predicted_mastery=0.8)
    assert catalog.apply(moved).redefined

    catalog.apply(module("m-1", ("lo-a",), name="Practice"))
    assert not catalog.apply(module("m-1", ("lo-a",), name="Practice, 1")).redefined
    tagged = catalog.for_partner("p").module("m-1")
    assert tagged is not None and tagged.module_name == "Practice, 1"


def test_the_owner_renames_a_learning_instance_another_partner_cannot() -> None:
    catalog = Catalog()
    catalog.apply(instance(title="Algebra I"))
    catalog.apply(instance(title="Algebra I, fall"))
    li = catalog.learning_instance("li-1")
    assert li is not None and li.title == "Algebra I, fall" and li.partner_id == "p"
    assert catalog.apply(instance(partner="q", title="Hijacked")).rejected
    li = catalog.learning_instance("li-1")
    assert li is not None and li.title == "Algebra I, fall"


def test_a_goal_s_names_come_from_its_title_and_the_partner_s_modules() -> None:
    catalog = Catalog()
    catalog.apply(instance())
    # lo-a is named by m-2 (first by id among the modules naming it); lo-b is
    # tagged but named nowhere.
    catalog.apply(module("m-2", ("lo-a", "lo-b"), objective_names={"lo-a": "Ratios"}))
    catalog.apply(module("m-9", ("lo-a",), objective_names={"lo-a": "Ratios (old)"}))
    catalog.apply(goal("goal-1", objectives=("lo-a", "lo-b"), title="Number sense"))
    number_sense = catalog.goal("goal-1")
    assert number_sense is not None
    assert orjson.loads(goal_names(number_sense, catalog)) == {
        "title": "Number sense",
        "targets": {"lo-a": "Ratios"},
    }
    catalog.apply(module("m-5", ("lo-c",), name="Equations"))
    of_modules = GoalDefined(
        event_id="e-mod",
        occurred_at=NOW,
        goal_id="goal-2",
        learning_instance_id="li-1",
        targets=[Target(module_id="m-5"), Target(module_id="m-6")],
    )
    catalog.apply(of_modules)
    assert orjson.loads(goal_names(of_modules, catalog)) == {
        "targets": {"m-5": "Equations"}
    }


def test_a_registration_keeps_its_name_and_a_repeat_renames_it() -> None:
    catalog = make_catalog()
    first = register(None, created(display_name="Ada L."), catalog)
    assert first.outcome == "applied" and first.state is not None
    assert first.state.display_name == "Ada L."
    same = register(first.state, created(display_name="Ada L."), catalog)
    assert same.outcome == "duplicate"
    renamed = register(first.state, created(display_name="Ada Lovelace"), catalog)
    assert renamed.outcome == "applied" and renamed.state is not None
    assert renamed.state.display_name == "Ada Lovelace"
    # Attempts keep the name.
    applied = attempt_on(renamed.state, attempt(), catalog)
    assert applied.outcome == "applied" and applied.state is not None
    assert applied.state.display_name == "Ada Lovelace"
    removed = register(renamed.state, created(), catalog)
    assert removed.state is not None and removed.state.display_name is None
    # Another user under the same id is still refused.
    other = register(first.state, created(user="u2", display_name="Eve"), catalog)
    assert other.outcome == "rejected"


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
