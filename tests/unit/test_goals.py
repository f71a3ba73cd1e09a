"""Goal evaluation: the contract's status_and_progress item."""

from __future__ import annotations

import datetime as dt
import itertools
import random

import orjson

from processors.catalog import Catalog, PartnerCatalog
from processors.goals import STRUGGLE_MIN_ATTEMPTS, affected_by, evaluate
from processors.registration import RegistrationState, apply_attempt, register
from schemas.events import (
    AttemptGraded,
    BKTParameters,
    CompletionCriteria,
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    RegistrationCreated,
    Target,
)

NOW = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
PARTNER = "p1"
_ids = itertools.count()
FAST = BKTParameters(prior=0.3, learn=0.2, guess=0.2, slip=0.1)
STUCKISH = BKTParameters(prior=0.3, learn=0.1, guess=0.2, slip=0.1)


def tagged(module_id: str, *objectives: str) -> ModuleTagged:
    params = {o: (STUCKISH if o == "lo-s" else FAST) for o in objectives}
    return ModuleTagged(
        event_id=f"t{next(_ids)}",
        occurred_at=NOW,
        partner_id=PARTNER,
        module_id=module_id,
        learning_objective_ids=list(objectives),
        parameters=params,
    )


def goal(
    goal_id: str,
    targets: list[Target],
    topics: dict[str, list[str]] | None = None,
    **criteria: object,
) -> GoalDefined:
    return GoalDefined(
        event_id=f"g{next(_ids)}",
        occurred_at=NOW,
        goal_id=goal_id,
        learning_instance_id="li-1",
        targets=targets,
        topics=topics,
        completion_criteria=CompletionCriteria.model_validate(
            {"min_predicted_mastery": 0.9, "min_work_per_target": 2, **criteria}
        ),
    )


def objectives(*ids: str) -> list[Target]:
    return [Target(learning_objective_id=i) for i in ids]


def modules(*ids: str) -> list[Target]:
    return [Target(module_id=i) for i in ids]


G_OBJ = goal(
    "g-obj", objectives("lo-a", "lo-b"), {"t1": ["lo-a"], "t2": ["lo-a", "lo-b"]}
)
G_MOD = goal("g-mod", modules("m-a", "m-ab"))
G_MAX = goal("g-max", objectives("lo-a"), max_work_on_goal=3)
G_OTHER = goal("g-other", objectives("lo-a"))
G_STUCK = goal("g-stuck", objectives("lo-s"))
G_GHOST = goal("g-ghost", modules("m-untagged"))
GOALS = [G_OBJ, G_MOD, G_MAX, G_OTHER, G_STUCK, G_GHOST]


def make_full_catalog() -> Catalog:
    c = Catalog()
    c.apply(
        LearningInstanceCreated(
            event_id="li",
            occurred_at=NOW,
            learning_instance_id="li-1",
            partner_id=PARTNER,
        )
    )
    for event in (
        tagged("m-a", "lo-a"),
        tagged("m-b", "lo-b"),
        tagged("m-ab", "lo-a", "lo-b"),
        tagged("m-c", "lo-c"),
        tagged("m-s", "lo-s"),
    ):
        c.apply(event)
    for g in GOALS:
        c.apply(g)
    return c


def make_catalog() -> PartnerCatalog:
    """The catalog as the learners' partner sees it (as the worker reads it)."""
    return make_full_catalog().for_partner(PARTNER)


def fresh(catalog: Catalog | None = None) -> RegistrationState:
    """Learner r1 of li-1, registered in ``catalog`` (default: this module's)."""
    state = register(
        None,
        RegistrationCreated(
            event_id="r",
            occurred_at=NOW,
            registration_id="r1",
            learning_instance_id="li-1",
            user_id="u1",
            role="learner",
        ),
        catalog or make_full_catalog(),
    ).state
    assert state is not None
    return state


def answer(
    state: RegistrationState,
    catalog: PartnerCatalog,
    module: str,
    correct: bool,
    goal_id: str | None = None,
) -> RegistrationState:
    result = apply_attempt(
        state,
        AttemptGraded(
            event_id=f"e{next(_ids)}",
            occurred_at=NOW,
            attempt_id=f"a{next(_ids)}",
            registration_id="r1",
            module_id=module,
            is_correct=correct,
            interaction_end_time=NOW,
            goal_id=goal_id,
        ),
        catalog,
    )
    assert result.outcome == "applied", result.reason
    assert result.state is not None
    return result.state


def targets_of(row: dict[str, object]) -> list[dict[str, object]]:
    value = row["targets"]
    assert isinstance(value, list)
    return value


def topics_of(row: dict[str, object]) -> list[dict[str, int | str]]:
    value = row.get("topic_work_remaining", [])
    assert isinstance(value, list)
    return value


def test_template_row_equals_registered_without_attempts() -> None:
    c = make_catalog()
    for g in GOALS:
        assert evaluate(g, None, c) == evaluate(g, fresh(), c)
    row = evaluate(G_OBJ, None, c)
    assert row == {
        "goal_id": "g-obj",
        "status": "no_work",
        "progress": 0.0,
        "work_remaining": -1,
        "targets": [
            {"target_id": "lo-a", "status": "no_work", "progress": 0.0},
            {"target_id": "lo-b", "status": "no_work", "progress": 0.0},
        ],
        "topic_work_remaining": [
            {"topic_id": "t1", "min_work_remaining": -1, "average_work_remaining": -1},
            {"topic_id": "t2", "min_work_remaining": -1, "average_work_remaining": -1},
        ],
    }


def test_keys_follow_the_contract_order() -> None:
    c = make_catalog()
    s = answer(fresh(), c, "m-ab", True)
    row = evaluate(G_OBJ, s, c)
    assert list(row) == [
        "goal_id",
        "status",
        "progress",
        "work_remaining",
        "targets",
        "topic_work_remaining",
    ]
    assert [list(t) for t in targets_of(row)] == [
        ["target_id", "status", "progress"]
    ] * 2
    module_row = evaluate(G_MOD, s, c)
    assert "topic_work_remaining" not in module_row
    assert [t["module_id"] for t in targets_of(module_row)] == ["m-a", "m-ab"]


def test_all_targets_complete() -> None:
    c = make_catalog()
    s = fresh()
    for _ in range(6):
        s = answer(s, c, "m-a", True)
        s = answer(s, c, "m-b", True)
    row = evaluate(G_OBJ, s, c)
    assert (row["status"], row["progress"], row["work_remaining"]) == (
        "complete",
        1.0,
        0,
    )
    assert all(
        t["status"] == "complete" and t["progress"] == 1.0 for t in targets_of(row)
    )
    assert row["topic_work_remaining"] == [
        {"topic_id": "t1", "min_work_remaining": 0, "average_work_remaining": 0},
        {"topic_id": "t2", "min_work_remaining": 0, "average_work_remaining": 0},
    ]


def test_max_work_then_mastery_becomes_complete() -> None:
    c = make_catalog()
    s = fresh()
    for _ in range(3):
        s = answer(s, c, "m-a", False, goal_id="g-max")
    row = evaluate(G_MAX, s, c)
    assert (row["status"], row["work_remaining"], row["progress"]) == (
        "complete_max_work",
        0,
        1.0,
    )
    assert targets_of(row)[0]["status"] != "complete"
    for _ in range(8):
        s = answer(s, c, "m-a", True)
    row = evaluate(G_MAX, s, c)
    assert row["status"] == "complete"


def test_work_counts_tagged_for_this_goal_and_untagged_on_covering_modules() -> None:
    c = make_catalog()
    s = answer(fresh(), c, "m-a", True, goal_id="g-other")
    # Mastery moved, but the attempt was for another goal.
    row = evaluate(G_OBJ, s, c)
    assert row["status"] == "no_work"
    assert row["work_remaining"] == -1
    assert evaluate(G_OTHER, s, c)["status"] == "in_progress"
    # One untagged attempt on a module covering both targets: work 1 on each.
    s = answer(s, c, "m-ab", True)
    row = evaluate(G_OBJ, s, c)
    assert row["status"] == "in_progress"
    assert [t["status"] for t in targets_of(row)] == ["in_progress", "in_progress"]
    remaining = row["work_remaining"]
    assert isinstance(remaining, int)
    # min_work_per_target=2: each target needs at least one more item.
    assert remaining >= 2
    assert row["progress"] == round(1 / (1 + remaining), 4)


def test_tagged_work_on_modules_outside_the_goal_counts_but_gives_no_estimate() -> None:
    c = make_catalog()
    s = answer(fresh(), c, "m-c", True, goal_id="g-obj")
    row = evaluate(G_OBJ, s, c)
    assert (row["status"], row["work_remaining"], row["progress"]) == (
        "in_progress",
        -1,
        0.0,
    )


def test_module_target_needs_every_objective_of_the_module() -> None:
    c = make_catalog()
    s = fresh()
    for _ in range(6):
        s = answer(s, c, "m-a", True)
    row = evaluate(G_MOD, s, c)
    assert [t["status"] for t in targets_of(row)] == ["complete", "no_work"]
    s = answer(s, c, "m-ab", True)
    row = evaluate(G_MOD, s, c)
    assert targets_of(row)[1]["status"] == "in_progress"  # lo-b still low
    for _ in range(6):
        s = answer(s, c, "m-ab", True)
    assert evaluate(G_MOD, s, c)["status"] == "complete"


def test_untagged_module_target_never_completes() -> None:
    c = make_catalog()
    row = evaluate(G_GHOST, fresh(), c)
    assert row["status"] == "no_work"
    assert targets_of(row)[0]["status"] == "no_work"


def test_stuck_learner_is_struggling_and_a_learning_one_is_not() -> None:
    c = make_catalog()
    stuck = fresh()
    flagged_at = None
    for k in range(1, 16):
        stuck = answer(stuck, c, "m-s", k % 5 == 0)  # right at the guess rate
        row = evaluate(G_STUCK, stuck, c)
        if row["status"] == "struggling" and flagged_at is None:
            flagged_at = k
    assert flagged_at is not None
    assert STRUGGLE_MIN_ATTEMPTS <= flagged_at <= 15
    assert targets_of(evaluate(G_STUCK, stuck, c))[0]["status"] == "struggling"
    learner = fresh()
    for k in range(15):
        learner = answer(learner, c, "m-s", k >= 3)
        assert evaluate(G_STUCK, learner, c)["status"] != "struggling"


def test_rows_stay_in_range_on_random_histories() -> None:
    c = make_catalog()
    rng = random.Random(2)
    for _ in range(40):
        s = fresh()
        for _ in range(rng.randrange(0, 40)):
            module = rng.choice(["m-a", "m-b", "m-ab", "m-c", "m-s"])
            goal_id = rng.choice([None, None, "g-obj", "g-max", "g-other"])
            s = answer(s, c, module, rng.random() < 0.6, goal_id)
            for g in GOALS:
                row = evaluate(g, s, c)
                wr = row["work_remaining"]
                assert isinstance(wr, int)
                assert wr == -1 or 0 <= wr <= 30
                progress = row["progress"]
                assert isinstance(progress, float)
                assert 0.0 <= progress <= 1.0
                assert row["status"] in {
                    "complete",
                    "complete_max_work",
                    "in_progress",
                    "struggling",
                    "no_work",
                }
                for t in targets_of(row):
                    assert t["status"] in {
                        "complete",
                        "in_progress",
                        "struggling",
                        "no_work",
                    }
                    assert isinstance(t["progress"], float)
                    assert 0.0 <= t["progress"] <= 1.0
                for topic in topics_of(row):
                    best, average = (
                        topic["min_work_remaining"],
                        topic["average_work_remaining"],
                    )
                    assert isinstance(best, int)
                    assert isinstance(average, int)
                    assert -1 <= best <= average <= 30
                    assert (best == -1) == (average == -1)


def test_evaluation_is_deterministic() -> None:
    c = make_catalog()
    s = fresh()
    for k in range(7):
        s = answer(s, c, "m-ab", k % 3 != 1)
    first = orjson.dumps(evaluate(G_OBJ, s, c))
    again = orjson.dumps(evaluate(G_OBJ, RegistrationState.from_bytes(s.to_bytes()), c))
    assert first == again


def test_affected_by_is_exact_on_random_histories() -> None:
    """Whenever affected_by says an attempt cannot change a goal's row, the row
    really is unchanged (the worker skips evaluating it); and it does say True
    for attempts that do change it."""
    catalog = make_catalog()
    rng = random.Random(99)
    module_ids = ["m-a", "m-b", "m-ab", "m-c", "m-s"]
    goal_tags = [None, None, "g-obj", "g-mod", "g-other"]
    said_unaffected = changed_when_affected = 0
    for _ in range(40):
        state = fresh()
        for _ in range(25):
            module, tag = rng.choice(module_ids), rng.choice(goal_tags)
            after = answer(state, catalog, module, rng.random() < 0.6, tag)
            module_event = catalog.module(module)
            assert module_event is not None
            for g in GOALS:
                hit = affected_by(
                    g,
                    catalog,
                    modules={module},
                    objectives=set(module_event.learning_objective_ids),
                    goal_ids=set() if tag is None else {tag},
                )
                before_row = evaluate(g, state, catalog)
                after_row = evaluate(g, after, catalog)
                if not hit:
                    said_unaffected += 1
                    assert after_row == before_row, (g.goal_id, module, tag)
                elif after_row != before_row:
                    changed_when_affected += 1
            state = after
    assert said_unaffected > 500
    assert changed_when_affected > 500
