"""Registration state: registering, applying attempts, idempotency, bytes."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Literal

import orjson
import pytest

from processors import registration
from processors.catalog import Catalog
from processors.mastery import apply, initial, p_mastered
from processors.registration import (
    ATTEMPTS_MAX,
    AttemptResult,
    RegistrationState,
    apply_attempt,
    epoch_us,
    is_redelivery,
    register,
    with_position,
)
from schemas.events import (
    AttemptGraded,
    BKTParameters,
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    RegistrationCreated,
    Target,
)

NOW = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
_ids = itertools.count()
SLOW = BKTParameters(prior=0.2, learn=0.05, guess=0.25, slip=0.1)


PARTNER = "p1"


def make_catalog() -> Catalog:
    c = Catalog()
    for li in ("li-1", "li-2"):
        c.apply(
            LearningInstanceCreated(
                event_id=f"c-{li}",
                occurred_at=NOW,
                learning_instance_id=li,
                partner_id=PARTNER,
            )
        )
    c.apply(
        ModuleTagged(
            event_id="t1",
            occurred_at=NOW,
            partner_id=PARTNER,
            module_id="m-ab",
            learning_objective_ids=["lo-a", "lo-b"],
            parameters={"lo-b": SLOW},
        )
    )
    c.apply(
        ModuleTagged(
            event_id="t2",
            occurred_at=NOW,
            partner_id=PARTNER,
            module_id="m-a",
            learning_objective_ids=["lo-a"],
        )
    )
    for gid, li in (("g1", "li-1"), ("g2", "li-1"), ("g-other", "li-2")):
        c.apply(
            GoalDefined(
                event_id=f"d-{gid}",
                occurred_at=NOW,
                goal_id=gid,
                learning_instance_id=li,
                targets=[Target(learning_objective_id="lo-a")],
            )
        )
    return c


def created(
    role: Literal["learner", "instructor"] = "learner",
    reg: str = "r1",
    *,
    user: str = "u1",
    display_name: str | None = None,
) -> RegistrationCreated:
    return RegistrationCreated(
        event_id=f"e{next(_ids)}",
        occurred_at=NOW,
        registration_id=reg,
        learning_instance_id="li-1",
        user_id=user,
        role=role,
        display_name=display_name,
    )


def attempt(
    module: str = "m-a",
    correct: bool = True,
    goal: str | None = None,
    attempt_id: str | None = None,
    reg: str = "r1",
) -> AttemptGraded:
    return AttemptGraded(
        event_id=f"e{next(_ids)}",
        occurred_at=NOW,
        attempt_id=attempt_id or f"a{next(_ids)}",
        registration_id=reg,
        module_id=module,
        is_correct=correct,
        interaction_end_time=NOW,
        goal_id=goal,
    )


def attempt_on(
    state: RegistrationState | None, event: AttemptGraded, catalog: Catalog
) -> AttemptResult:
    """apply_attempt as the worker calls it: through the partner's view."""
    return apply_attempt(state, event, catalog.for_partner(PARTNER))


def registered(
    state: RegistrationState | None,
    event: RegistrationCreated,
    catalog: Catalog | None = None,
) -> RegistrationState:
    result = register(state, event, catalog or make_catalog())
    assert result.outcome != "rejected", result.reason
    assert result.state is not None
    return result.state


def applied(
    state: RegistrationState, event: AttemptGraded, catalog: Catalog
) -> RegistrationState:
    result = attempt_on(state, event, catalog)
    assert result.outcome == "applied", result.reason
    assert result.state is not None
    return result.state


def test_register_is_idempotent_and_keeps_work() -> None:
    c = make_catalog()
    s = registered(None, created())
    assert (s.registration_id, s.learning_instance_id, s.user_id, s.role) == (
        "r1",
        "li-1",
        "u1",
        "learner",
    )
    s = applied(s, attempt(), c)
    again = registered(s, created())
    assert again == s
    assert again.objectives["lo-a"].attempts == 1


def test_attempt_updates_every_tagged_objective_with_its_params() -> None:
    c = make_catalog()
    s = applied(registered(None, created()), attempt("m-ab", correct=True), c)
    view = c.for_partner(PARTNER)
    a_params, b_params = view.params_for("lo-a"), view.params_for("lo-b")
    assert s.objectives["lo-a"] == apply(initial(a_params), a_params, True)
    assert s.objectives["lo-b"] == apply(initial(b_params), b_params, True)
    assert p_mastered(s.objectives["lo-b"]) != p_mastered(s.objectives["lo-a"])


def test_work_counters_split_tagged_and_untagged() -> None:
    c = make_catalog()
    s = registered(None, created())
    s = applied(s, attempt("m-a"), c)
    s = applied(s, attempt("m-a", goal="g1"), c)
    s = applied(s, attempt("m-ab", goal="g1"), c)
    s = applied(s, attempt("m-ab", goal="g2"), c)
    assert s.untagged_work == {"m-a": 1}
    assert s.tagged_work == {"g1": {"m-a": 1, "m-ab": 1}, "g2": {"m-ab": 1}}
    assert s.objectives["lo-a"].attempts == 4
    assert s.objectives["lo-b"].attempts == 2


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (attempt(module="m-unknown"), "unknown module 'm-unknown'"),
        (attempt(goal="g-missing"), "unknown goal 'g-missing'"),
        (attempt(goal="g-other"), "belongs to learning instance 'li-2'"),
        (attempt(reg="r2"), "registration 'r2'"),
    ],
)
def test_rejections_leave_state_unchanged(event: AttemptGraded, reason: str) -> None:
    s = registered(None, created())
    result = attempt_on(s, event, make_catalog())
    assert result.outcome == "rejected"
    assert result.reason is not None
    assert reason in result.reason
    assert result.state is s


def test_unknown_registration_and_instructor_are_rejected() -> None:
    c = make_catalog()
    result = attempt_on(None, attempt(), c)
    assert (result.outcome, result.state) == ("rejected", None)
    assert result.reason is not None
    assert "unknown registration 'r1'" in result.reason
    teacher = registered(None, created(role="instructor"))
    result = attempt_on(teacher, attempt(), c)
    assert result.outcome == "rejected"
    assert result.reason is not None
    assert "instructor" in result.reason
    assert result.state is teacher


def test_duplicate_attempt_is_reported_and_changes_nothing() -> None:
    c = make_catalog()
    s = applied(registered(None, created()), attempt(attempt_id="same"), c)
    result = attempt_on(s, attempt(attempt_id="same", correct=False), c)
    assert result.outcome == "duplicate"
    assert result.state is s
    assert result.reason is None


def test_every_applied_attempt_id_is_remembered() -> None:
    """Not a window: an id re-sent after 1,000 others is still a duplicate
    (the window of 128 counted a re-sent POST /batch-events of 200 twice)."""
    c = make_catalog()
    s = registered(None, created())
    for i in range(1000):
        s = applied(s, attempt(attempt_id=f"x{i}"), c)
    assert s.attempts_remembered == 1000
    for i in (0, 1, 500, 999):
        assert attempt_on(s, attempt(attempt_id=f"x{i}"), c).outcome == "duplicate"
    assert attempt_on(s, attempt(attempt_id="x1000"), c).outcome == "applied"


def test_a_registration_at_the_bound_rejects_new_attempts_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registration, "ATTEMPTS_MAX", 5)
    c = make_catalog()
    s = registered(None, created())
    for i in range(5):
        s = applied(s, attempt(attempt_id=f"x{i}"), c)
    over = attempt_on(s, attempt(attempt_id="x5"), c)
    assert over.outcome == "rejected" and over.state is s
    assert over.reason is not None and "has 5 attempts" in over.reason
    assert attempt_on(s, attempt(attempt_id="x4"), c).outcome == "duplicate"
    assert ATTEMPTS_MAX == 50_000  # the real bound, documented


def test_a_format_3_state_keeps_recognizing_its_old_fingerprints() -> None:
    """States written before format 4 kept their last 128 ids as 48-bit
    fingerprints: still duplicates after the upgrade, new ids go in the new
    string, and the upgraded state round-trips."""
    c = make_catalog()
    old_fps = "".join(registration._fingerprint(f"old{i}", 8) for i in range(3))
    data = orjson.dumps(
        [3, "r1", "li1", "u1", "learner", {}, {}, {}, old_fps, 7, 0, 41]
    )
    s = RegistrationState.from_bytes(data)
    assert s.legacy_seen == old_fps and s.seen == "" and s.source_offset == 41
    assert attempt_on(s, attempt(attempt_id="old2"), c).outcome == "duplicate"
    after = applied(s, attempt(attempt_id="new0"), c)
    assert after.attempts_remembered == 1 and after.legacy_seen == old_fps
    assert attempt_on(after, attempt(attempt_id="new0"), c).outcome == "duplicate"
    assert RegistrationState.from_bytes(after.to_bytes()) == after


def test_bytes_round_trip_is_exact() -> None:
    c = make_catalog()
    s = registered(None, created())
    for i in range(40):
        s = applied(
            s,
            attempt(
                "m-ab" if i % 3 else "m-a",
                correct=i % 4 != 0,
                goal="g1" if i % 2 else None,
            ),
            c,
        )
    data = s.to_bytes()
    back = RegistrationState.from_bytes(data)
    assert back == s
    assert back.to_bytes() == data
    assert back.objectives["lo-b"].log_odds == s.objectives["lo-b"].log_odds
    fresh = registered(None, created())
    assert RegistrationState.from_bytes(fresh.to_bytes()) == fresh


def test_from_bytes_rejects_other_formats() -> None:
    with pytest.raises(ValueError, match="not a registration state"):
        RegistrationState.from_bytes(b'[9,"r","li","u","learner",{},{},{},""]')
    with pytest.raises(ValueError, match="not a registration state"):  # 3 needs 12
        RegistrationState.from_bytes(b'[3,"r","li","u","learner",{},{},{},"",0]')
    with pytest.raises(ValueError, match="not a registration state"):  # 4 needs 13
        RegistrationState.from_bytes(b'[4,"r","li","u","learner",{},{},{},"",0,1,2]')


def test_position_round_trips_and_format_2_reads_as_unknown() -> None:
    s = with_position(registered(None, created()), 2, 41)
    back = RegistrationState.from_bytes(s.to_bytes())
    assert (back.source_partition, back.source_offset) == (2, 41)
    assert back == s
    old = RegistrationState.from_bytes(b'[2,"r1","li1","u1","learner",{},{},{},"",7]')
    assert (old.source_partition, old.source_offset) == (-1, -1)
    assert old.created_us == 7
    assert not is_redelivery(old, 0, 0)


def test_redelivery_is_a_record_at_or_before_the_position_on_its_partition() -> None:
    c = make_catalog()
    s = with_position(registered(None, created()), 1, 100)
    assert is_redelivery(s, 1, 100)
    assert is_redelivery(s, 1, 3)
    assert not is_redelivery(s, 1, 101)
    assert not is_redelivery(s, 0, 3)  # another partition: not comparable
    assert not is_redelivery(None, 1, 3)
    # Folding attempts keeps the position (the worker advances it).
    after = applied(s, attempt("m-a"), c)
    assert (after.source_partition, after.source_offset) == (1, 100)
    assert with_position(after, 1, 100) is after


def test_a_replay_is_recognized_by_position_and_by_fingerprint() -> None:
    """200 attempts replayed from the start of the partition: the position
    recognizes every record as a redelivery in O(1), and the fingerprints
    (all of them since format 4) would too."""
    c = make_catalog()
    attempts = [attempt("m-a", attempt_id=f"a{i}") for i in range(200)]
    s = registered(None, created())
    for offset, a in enumerate(attempts, start=1):
        s = with_position(applied(s, a, c), 0, offset)
    replayed_by_fingerprint = [attempt_on(s, a, c).outcome for a in attempts]
    assert set(replayed_by_fingerprint) == {"duplicate"}
    assert all(is_redelivery(s, 0, offset) for offset in range(1, 201))


def test_creation_time_survives_attempts_and_re_registration() -> None:
    """The learner's place in the learning instance's order must never move."""
    catalog = Catalog()
    catalog.apply(
        LearningInstanceCreated(
            event_id="l", occurred_at=NOW, learning_instance_id="li", partner_id=PARTNER
        )
    )
    catalog.apply(
        ModuleTagged(
            event_id="m",
            occurred_at=NOW,
            partner_id=PARTNER,
            module_id="mod",
            learning_objective_ids=["lo"],
        )
    )
    created = RegistrationCreated(
        event_id="r",
        occurred_at=dt.datetime(2026, 3, 1, 9, 30, 0, 250_000, tzinfo=dt.UTC),
        registration_id="reg",
        learning_instance_id="li",
        user_id="u",
        role="learner",
    )
    state = registered(None, created, catalog)
    assert state.created_us == epoch_us(created.occurred_at) == 1772357400250000
    attempt = AttemptGraded(
        event_id="a",
        occurred_at=NOW,
        attempt_id="a1",
        registration_id="reg",
        module_id="mod",
        is_correct=True,
        interaction_end_time=NOW,
    )
    applied = attempt_on(state, attempt, catalog).state
    assert applied is not None
    assert applied.created_us == state.created_us
    again = registered(
        applied, created.model_copy(update={"occurred_at": NOW}), catalog
    )
    assert again.created_us == state.created_us
    assert RegistrationState.from_bytes(again.to_bytes()).created_us == state.created_us


def test_the_first_creation_of_a_registration_id_keeps_it() -> None:
    c = make_catalog()
    first = registered(None, created())
    same = register(first, created(), c)
    assert same.outcome == "duplicate" and same.state == first
    for change in (
        {"learning_instance_id": "li-2"},
        {"user_id": "u-other"},
        {"role": "instructor"},
    ):
        other = created().model_copy(update=change)
        result = register(first, other, c)
        assert result.outcome == "rejected"
        assert result.state == first  # unchanged
        assert "already exists" in (result.reason or "")


def test_a_registration_needs_a_known_learning_instance() -> None:
    event = created().model_copy(update={"learning_instance_id": "li-unknown"})
    result = register(None, event, make_catalog())
    assert result.outcome == "rejected" and result.state is None
    assert result.reason == "unknown learning instance 'li-unknown'"


def test_another_partners_module_and_goal_are_unknown_to_a_registration() -> None:
    c = make_catalog()
    c.apply(
        LearningInstanceCreated(
            event_id="c-b",
            occurred_at=NOW,
            learning_instance_id="li-b",
            partner_id="p2",
        )
    )
    c.apply(
        ModuleTagged(
            event_id="t-b",
            occurred_at=NOW,
            partner_id="p2",
            module_id="m-b",
            learning_objective_ids=["lo-a"],
            parameters={"lo-a": SLOW},
        )
    )
    s = registered(None, created(), c)
    # p2's module is unknown to p1's learner ...
    result = attempt_on(s, attempt("m-b"), c)
    assert result.outcome == "rejected" and "unknown module" in (result.reason or "")
    # ... and p2's parameters for its own lo-a do not touch p1's lo-a.
    assert c.for_partner(PARTNER).params_for("lo-a") != c.for_partner("p2").params_for(
        "lo-a"
    )
