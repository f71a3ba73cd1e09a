"""The pure batch fold (processors/batch.py): outcomes, positions, rows."""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from typing import Any

import orjson
import pytest

from processors.batch import Record, decode, fold, needs_catalog, registration_ids
from processors.catalog import Catalog
from processors.forecaster import Forecast, SynchronousForecaster
from processors.registration import RegistrationState
from processors.rows import derive_rows
from schemas.events import (
    AttemptGraded,
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    RegistrationCreated,
    Target,
    encode_event,
)
from tests.unit.test_registration import NOW, PARTNER, make_catalog

TOPIC = "t.registration-events.v1"
_ids = itertools.count()


def created(reg: str = "r1", role: str = "learner", li: str = "li-1") -> bytes:
    return encode_event(
        RegistrationCreated(
            event_id=f"e{next(_ids)}",
            occurred_at=NOW,
            registration_id=reg,
            learning_instance_id=li,
            user_id=f"u-{reg}",
            role=role,  # type: ignore[arg-type]
        )
    )


def attempt(
    reg: str = "r1",
    attempt_id: str | None = None,
    module: str = "m-a",
    correct: bool = True,
    goal: str | None = None,
) -> bytes:
    return encode_event(
        AttemptGraded(
            event_id=f"e{next(_ids)}",
            occurred_at=NOW,
            attempt_id=attempt_id or f"a{next(_ids)}",
            registration_id=reg,
            module_id=module,
            is_correct=correct,
            interaction_end_time=NOW,
            goal_id=goal,
        )
    )


def records(
    *values: bytes, partition: int = 0, start: int = 0, key: bytes | None = b"r1"
) -> list[Record]:
    return [Record(TOPIC, partition, start + i, key, v) for i, v in enumerate(values)]


def run(
    recs: list[Record], states: dict[str, RegistrationState | None], catalog: Catalog
):  # type: ignore[no-untyped-def]
    decoded, rejected = decode(recs)
    lookup = {reg: states.get(reg) for reg in registration_ids(decoded)}
    return fold(decoded, lookup, catalog), rejected


def test_new_learner_gets_every_goal_row_and_the_last_position() -> None:
    catalog = make_catalog()
    plan, rejected = run(
        records(created(), attempt(), attempt(correct=False)), {}, catalog
    )
    assert rejected == [] and plan.dead == []
    assert plan.outcomes == {"applied": 3}
    state = plan.states["r1"]
    assert (state.source_partition, state.source_offset) == (0, 2)
    assert sorted(g for _, g, _ in plan.rows) == ["g1", "g2"]  # li-1's goals
    # The rows are exactly what the one derivation gives for the final state.
    assert sorted((g, r) for _, g, r in plan.rows) == sorted(
        derive_rows(state, catalog)
    )
    assert [s.registration_id for s in plan.registrations] == ["r1"]


def test_attempts_project_only_the_goals_they_can_change() -> None:
    catalog = make_catalog()
    catalog.apply(
        GoalDefined(
            event_id="d-g3",
            occurred_at=NOW,
            goal_id="g3",
            learning_instance_id="li-1",
            targets=[Target(learning_objective_id="lo-b")],
        )
    )
    first, _ = run(records(created()), {}, catalog)
    known = first.states["r1"]
    plan, _ = run(records(attempt(module="m-a"), start=1), {"r1": known}, catalog)
    assert sorted(g for _, g, _ in plan.rows) == ["g1", "g2"]  # not g3 (lo-b)
    assert plan.registrations == []


def test_redelivered_records_are_not_applied_again_but_rewritten_and_projected() -> (
    None
):
    catalog = make_catalog()
    batch = records(created(), attempt(), attempt())
    plan, _ = run(batch, {}, catalog)
    state = plan.states["r1"]
    again, _ = run(batch, {"r1": state}, catalog)
    assert again.outcomes == {"redelivered": 3}
    assert again.states["r1"] == state  # written again, unchanged
    assert sorted(again.rows) == sorted(plan.rows)  # projected again, same rows
    # Only the tail past the position is applied.
    tail = [*batch[1:], *records(attempt(correct=False), start=3)]
    partial, _ = run(tail, {"r1": state}, catalog)
    assert partial.outcomes == {"redelivered": 2, "applied": 1}
    assert partial.states["r1"].source_offset == 3


def test_a_resent_attempt_is_a_duplicate_that_advances_the_position() -> None:
    catalog = make_catalog()
    plan, _ = run(records(created(), attempt(attempt_id="same")), {}, catalog)
    state = plan.states["r1"]
    dup, _ = run(records(attempt(attempt_id="same"), start=2), {"r1": state}, catalog)
    assert dup.outcomes == {"duplicate": 1}
    assert dup.states["r1"].objectives == state.objectives
    assert dup.states["r1"].source_offset == 2
    assert dup.rows  # re-projected


def test_rejections_carry_reasons_and_known_states_still_advance() -> None:
    catalog = make_catalog()
    plan, _ = run(records(created()), {}, catalog)
    state = plan.states["r1"]
    recs = [
        *records(attempt(module="m-unknown"), start=1),
        *records(attempt(goal="g-missing"), start=2),
        *records(attempt(goal="g-other"), start=3),  # another LI's goal
        *records(attempt(reg="ghost"), start=4, key=b"ghost"),
    ]
    out, rejected = run(recs, {"r1": state}, catalog)
    assert rejected == []
    reasons = [d.reason for d in out.dead]
    assert [d.record.offset for d in out.dead] == [1, 2, 3, 4]
    assert "unknown module 'm-unknown'" in reasons[0]
    assert "unknown goal 'g-missing'" in reasons[1]
    assert "belongs to learning instance 'li-2'" in reasons[2]
    assert "unknown registration 'ghost'" in reasons[3]
    assert out.outcomes == {"rejected": 4}
    assert out.states["r1"].source_offset == 3  # a redelivery won't re-reject
    assert "ghost" not in out.states and out.rows == []


def test_instructor_attempts_are_rejected() -> None:
    catalog = make_catalog()
    plan, _ = run(records(created(role="instructor"), attempt()), {}, catalog)
    assert plan.outcomes == {"applied": 1, "rejected": 1}
    assert "is an instructor" in plan.dead[0].reason
    assert plan.rows == []  # instructors have no rows
    assert [s.role for s in plan.registrations] == ["instructor"]


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (b"{not json", b"r1", "invalid event"),
        (b'{"type": "AttemptGraded"}', b"r1", "attempt_id: Field required"),
        (
            encode_event(
                LearningInstanceCreated(
                    event_id="x",
                    occurred_at=NOW,
                    learning_instance_id="li",
                    partner_id="p",
                )
            ),
            b"r1",
            "does not belong on this topic",
        ),
        (created(reg="r2"), b"r1", "record key differs from registration_id"),
        (None, b"r1", "invalid event"),
    ],
)
def test_undecodable_records_are_rejected(
    value: bytes | None, key: bytes, reason: str
) -> None:
    decoded, rejected = decode([Record(TOPIC, 0, 9, key, value)])
    assert decoded == []
    assert len(rejected) == 1 and reason in rejected[0].reason
    assert rejected[0].record.offset == 9


def test_needs_catalog_names_unknown_learning_instances_modules_and_goals() -> None:
    catalog = make_catalog()
    first, _ = run(records(created()), {}, catalog)
    states: dict[str, RegistrationState | None] = {"r1": first.states["r1"]}
    known, _ = decode(records(attempt()))
    assert not needs_catalog(known, states, catalog)
    unknown_module, _ = decode(records(attempt(module="m-new")))
    assert needs_catalog(unknown_module, states, catalog)
    unknown_goal, _ = decode(records(attempt(goal="g-new")))
    assert needs_catalog(unknown_goal, states, catalog)
    unknown_li, _ = decode(records(created(li="li-new")))
    assert needs_catalog(unknown_li, {"r1": None}, catalog)
    # Another partner's module of the same id is not this registration's.
    catalog.apply(
        ModuleTagged(
            event_id="t8",
            occurred_at=NOW,
            partner_id="p-other",
            module_id="m-new",
            learning_objective_ids=["lo-a"],
        )
    )
    assert needs_catalog(unknown_module, states, catalog)
    catalog.apply(
        ModuleTagged(
            event_id="t9",
            occurred_at=NOW,
            partner_id=PARTNER,
            module_id="m-new",
            learning_objective_ids=["lo-a"],
        )
    )
    assert not needs_catalog(unknown_module, states, catalog)
    # An attempt of an unknown registration needs nothing: no catalog helps.
    assert not needs_catalog(unknown_module, {"r1": None}, catalog)


def test_a_second_creation_of_a_registration_id_is_dead_lettered() -> None:
    catalog = make_catalog()
    first, _ = run(records(created()), {}, catalog)
    state = first.states["r1"]
    plan, _ = run(
        records(created(li="li-2"), attempt(), start=1), {"r1": state}, catalog
    )
    assert plan.outcomes == {"rejected": 1, "applied": 1}
    assert [d.reason for d in plan.dead] == [
        "registration_id 'r1' already exists with another learning instance, "
        "user or role (the first creation keeps it)"
    ]
    after = plan.states["r1"]
    assert after.learning_instance_id == "li-1"  # the first creation's
    assert sorted(g for _, g, _ in plan.rows) == ["g1", "g2"]  # li-1's goals


def test_a_registration_in_an_unknown_learning_instance_is_dead_lettered() -> None:
    plan, _ = run(records(created(li="li-nowhere"), attempt()), {}, make_catalog())
    assert plan.states == {} and plan.rows == []
    assert [d.reason for d in plan.dead] == [
        "unknown learning instance 'li-nowhere'",
        "unknown registration 'r1'",
    ]


def test_rows_are_the_served_json() -> None:
    catalog = make_catalog()
    plan, _ = run(records(created(), attempt()), {}, catalog)
    for _, goal_id, row in plan.rows:
        assert orjson.loads(row)["goal_id"] == goal_id


def test_a_record_without_a_key_is_rejected() -> None:
    decoded, rejected = decode(records(created(), key=None))
    assert decoded == []
    assert "record has no key" in rejected[0].reason


def test_records_off_their_keys_partition_are_split_off_with_their_home() -> None:
    from processors.batch import split_misplaced
    from processors.partitioning import kafka_partition

    home = kafka_partition(b"r1", 4)
    away = (home + 1) % 4
    recs = [
        *records(created(), partition=home),
        *records(attempt(), partition=away, start=1),
        *records(attempt(), partition=away, start=2, key=None),
    ]
    placed, misplaced = split_misplaced(recs, 4)
    assert [r.offset for r in placed] == [0, 2]  # keyless: left for decode to reject
    assert [(r.offset, p) for r, p in misplaced] == [(1, home)]


def test_the_forecasts_of_a_registrations_rows_are_served_as_its_partners() -> None:
    """Each partner has its own share of a worker's forecast work
    (processors/forecaster.py): fold names the partner before its rows."""

    class Recording(SynchronousForecaster):
        def __init__(self) -> None:
            super().__init__()
            self.owner: object = None
            self.served: list[object] = []
            self.forecast_owners: set[object] = set()

        def serve(self, owner: Hashable) -> None:
            self.owner = owner
            self.served.append(owner)

        def forecast(self, *args: Any) -> Forecast:
            self.forecast_owners.add(self.owner)
            return super().forecast(*args)

    catalog = make_catalog()
    catalog.apply(
        LearningInstanceCreated(
            event_id="c-li-3",
            occurred_at=NOW,
            learning_instance_id="li-3",
            partner_id="p-2",
        )
    )
    recs = [
        *records(created("r1"), attempt("r1", correct=False), key=b"r1"),
        *records(created("r3", li="li-3"), start=2, key=b"r3"),
    ]
    decoded, _ = decode(recs)
    forecaster = Recording()
    plan = fold(decoded, {"r1": None, "r3": None}, catalog, forecaster=forecaster)
    assert set(plan.states) == {"r1", "r3"}
    assert forecaster.served == [PARTNER, "p-2"]
    assert forecaster.forecast_owners == {PARTNER}  # li-1 has goals, li-3 none
    assert catalog.share_owner("li-unknown") == "li:li-unknown"
