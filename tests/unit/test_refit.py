"""Training data from the log and the events that publish fitted parameters
(processors/refit.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from processors.catalog import Catalog
from processors.mastery import DEFAULT_PARAMS, Params
from processors.refit import AnswerLog, parameter_events
from schemas.events import (
    AttemptGraded,
    BKTParameters,
    LearningInstanceCreated,
    ModuleTagged,
    RegistrationCreated,
)

T0 = datetime(2026, 9, 1, tzinfo=UTC)
OLD = BKTParameters(prior=0.3, learn=0.1, guess=0.2, slip=0.1)


def module(
    module_id: str,
    objectives: list[str],
    params: dict[str, BKTParameters] | None,
    partner: str = "pa",
) -> ModuleTagged:
    return ModuleTagged(
        event_id=f"e-{module_id}",
        occurred_at=T0,
        partner_id=partner,
        module_id=module_id,
        learning_objective_ids=objectives,
        parameters=params,
    )


def catalog() -> Catalog:
    c = Catalog()
    for li, partner in (("li-a", "pa"), ("li-b", "pb")):
        c.apply(
            LearningInstanceCreated(
                event_id=f"e-{li}",
                occurred_at=T0,
                learning_instance_id=li,
                partner_id=partner,
            )
        )
    c.apply(module("m1", ["lo-1"], None))
    c.apply(module("m12", ["lo-1", "lo-2"], {"lo-2": OLD}))
    # Both partners have a module and an objective of these ids: two of each.
    c.apply(module("m-shared", ["lo-s"], None))
    c.apply(module("m-shared", ["lo-s"], None, partner="pb"))
    return c


def reg(
    reg_id: str, li: str, role: str = "learner", at: datetime = T0
) -> RegistrationCreated:
    return RegistrationCreated(
        event_id=f"e-{reg_id}",
        occurred_at=at,
        registration_id=reg_id,
        learning_instance_id=li,
        user_id=f"u-{reg_id}",
        role=role,  # type: ignore[arg-type]
    )


def attempt(
    reg_id: str, module_id: str, correct: bool, n: int, ended: datetime = T0
) -> AttemptGraded:
    return AttemptGraded(
        event_id=f"e-{reg_id}-{n}",
        occurred_at=ended,
        attempt_id=f"a-{reg_id}-{n}",
        registration_id=reg_id,
        module_id=module_id,
        is_correct=correct,
        interaction_end_time=ended,
    )


def test_sequences_per_registration_and_objective_in_log_order() -> None:
    log = AnswerLog(catalog())
    for event in [
        reg("r1", "li-a"),
        reg("r2", "li-a"),
        attempt("r1", "m1", False, 1),
        attempt("r2", "m12", True, 1),
        attempt("r1", "m12", True, 2),
        attempt("r1", "m1", True, 3),
        attempt("r1", "m1", True, 3),  # the same attempt_id again
        attempt("r9", "m1", True, 1),  # never registered
        reg("i1", "li-a", role="instructor"),
        attempt("i1", "m1", True, 1),
        attempt("r2", "m-unknown", True, 2),
    ]:
        log.apply(event)
    assert log.sequences("pa") == {
        "lo-1": [[False, True, True], [True]],
        "lo-2": [[True], [True]],
    }
    assert dict(log.skipped) == {
        "duplicate attempt_id": 1,
        "unknown registration": 1,
        "instructor registration": 1,
        "untagged module": 1,
    }
    assert log.partners() == ["pa"]
    assert log.sequences("pb") == {}


def test_since_and_until_and_objectives_of_the_same_id() -> None:
    log = AnswerLog(catalog(), since=T0, until=T0 + timedelta(hours=1))
    for event in [
        reg("old", "li-a", at=T0 - timedelta(days=1)),
        reg("r1", "li-a"),
        reg("b1", "li-b"),
        attempt("old", "m1", True, 1),
        attempt("r1", "m1", True, 1),
        attempt("r1", "m1", False, 2, ended=T0 + timedelta(hours=2)),
        attempt("r1", "m-shared", True, 3),
        attempt("b1", "m-shared", False, 1),
    ]:
        log.apply(event)
    assert log.sequences("pa") == {"lo-1": [[True]], "lo-s": [[True]]}
    # pb's lo-s is pb's own objective: its answers never mix with pa's.
    assert log.sequences("pb") == {"lo-s": [[False]]}
    assert log.skipped["after --until"] == 1
    assert sum(log.skipped.values()) == 2


def test_parameter_events_set_fitted_objectives_only() -> None:
    c = catalog()
    newer = BKTParameters(prior=0.5, learn=0.2, guess=0.25, slip=0.05)
    c.apply(module("m2", ["lo-2"], {"lo-2": newer}))  # lo-2 redefined later
    fitted = Params(prior=0.6, learn=0.07, guess=0.22, slip=0.12)
    ids = iter(f"id-{n}" for n in range(10))
    publication = parameter_events(
        c.for_partner("pa"),
        {"lo-1": fitted, "lo-s": fitted, "lo-x": fitted},
        now=T0,
        new_id=lambda: next(ids),
    )
    assert publication.published == ["lo-1", "lo-s"]
    assert publication.refused == {"lo-x": "no module is tagged with it"}
    assert {e.partner_id for e in publication.events} == {"pa"}
    by_module = {e.module_id: e for e in publication.events}
    assert sorted(by_module) == ["m-shared", "m1", "m12"]
    schema = BKTParameters(prior=0.6, learn=0.07, guess=0.22, slip=0.12)
    assert by_module["m1"].parameters == {"lo-1": schema}
    # m12 keeps lo-2 at the catalog's *current* parameters, not its own old ones.
    assert by_module["m12"].parameters == {"lo-2": newer, "lo-1": schema}
    assert by_module["m12"].learning_objective_ids == ["lo-1", "lo-2"]
    for event in publication.events:
        c.apply(event)
    mine, theirs = c.for_partner("pa"), c.for_partner("pb")
    assert mine.params_for("lo-1") == fitted
    assert mine.params_for("lo-2") == Params.from_schema(newer)
    assert mine.params_for("lo-s") == fitted
    # The other partner's objective of the same id keeps its parameters.
    assert theirs.params_for("lo-s") == DEFAULT_PARAMS
    # Publishing the same parameters again changes nothing.
    again = parameter_events(mine, {"lo-1": fitted}, now=T0)
    assert again.events == []
    assert again.published == ["lo-1"]


def test_parameter_events_carry_the_forget_rate_and_the_selection() -> None:
    from schemas.events import ModelSelection

    c = catalog()
    fitted = Params(prior=0.6, learn=0.07, guess=0.22, slip=0.12, forget=0.02)
    why = ModelSelection(
        chosen="forgets", standard=-0.6, forgets=-0.58, held_out_attempts=321
    )
    publication = parameter_events(
        c.for_partner("pa"), {"lo-1": fitted}, now=T0, selections={"lo-1": why}
    )
    by_module = {e.module_id: e for e in publication.events}
    published = by_module["m1"].parameters
    assert published is not None
    assert published["lo-1"] == BKTParameters(
        prior=0.6, learn=0.07, guess=0.22, slip=0.12, forget=0.02, selection=why
    )
    # The worker reads the forget rate back from the event.
    for event in publication.events:
        c.apply(event)
    assert c.for_partner("pa").params_for("lo-1") == fitted
