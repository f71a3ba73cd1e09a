"""Goal rows with forgetting: statuses, topics and struggling on the same
transition, and ``complete`` that is not latched (docs/analytics.md)."""

from __future__ import annotations

from processors.catalog import Catalog, PartnerCatalog
from processors.goals import evaluate
from processors.mastery import Params
from schemas.events import (
    BKTParameters,
    LearningInstanceCreated,
    ModuleTagged,
)
from tests.unit.test_goals import (
    NOW,
    PARTNER,
    answer,
    fresh,
    goal,
    objectives,
    targets_of,
    topics_of,
)

FORGETFUL = BKTParameters(prior=0.3, learn=0.2, guess=0.2, slip=0.1, forget=0.02)
STUCK_FORGETFUL = BKTParameters(prior=0.3, learn=0.1, guess=0.2, slip=0.1, forget=0.02)
G = goal("g-f", objectives("lo-f", "lo-g"), {"t": ["lo-f", "lo-g"]})
G_HIGH = goal("g-high", objectives("lo-f"), min_predicted_mastery=0.99)
G_STUCK = goal("g-sf", objectives("lo-s"))


def catalog() -> Catalog:
    c = Catalog()
    c.apply(
        LearningInstanceCreated(
            event_id="li",
            occurred_at=NOW,
            learning_instance_id="li-1",
            partner_id=PARTNER,
        )
    )
    for module, lo, params in (
        ("m-f", "lo-f", FORGETFUL),
        ("m-g", "lo-g", FORGETFUL),
        ("m-s", "lo-s", STUCK_FORGETFUL),
    ):
        c.apply(
            ModuleTagged(
                event_id=f"t-{module}",
                occurred_at=NOW,
                partner_id=PARTNER,
                module_id=module,
                learning_objective_ids=[lo],
                parameters={lo: params},
            )
        )
    for g in (G, G_HIGH, G_STUCK):
        c.apply(g)
    return c


def test_the_catalog_carries_the_forget_rate() -> None:
    c = catalog().for_partner(PARTNER)
    assert c.params_for("lo-f") == Params(0.3, 0.2, 0.2, 0.1, forget=0.02)


def test_complete_is_not_latched_wrong_answers_reopen_a_target() -> None:
    full = catalog()
    c: PartnerCatalog = full.for_partner(PARTNER)
    s = fresh(full)
    for _ in range(6):
        s = answer(s, c, "m-f", True)
        s = answer(s, c, "m-g", True)
    row = evaluate(G, s, c)
    assert row["status"] == "complete"
    assert topics_of(row)[0]["min_work_remaining"] == 0
    # No time passes in BKT: a learner who stops practising stays complete.
    assert evaluate(G, s, c) == row
    for _ in range(3):
        s = answer(s, c, "m-f", False)
    row = evaluate(G, s, c)
    assert row["status"] == "in_progress"
    assert targets_of(row)[0]["status"] == "in_progress"
    assert targets_of(row)[1]["status"] == "complete"
    topic = topics_of(row)[0]
    assert 0 < int(topic["min_work_remaining"]) <= int(topic["average_work_remaining"])
    assert row["work_remaining"] == topic["average_work_remaining"]


def test_a_threshold_above_the_forgetting_ceiling_never_completes() -> None:
    full = catalog()
    c = full.for_partner(PARTNER)
    s = fresh(full)
    for _ in range(40):
        s = answer(s, c, "m-f", True)
    # forget = 0.02: P(mastered) stays below 0.98 < 0.99 however long the streak
    row = evaluate(G_HIGH, s, c)
    assert row["status"] == "in_progress"
    assert row["work_remaining"] == 30


def test_struggling_with_forgetting() -> None:
    full = catalog()
    c = full.for_partner(PARTNER)
    stuck = fresh(full)
    for k in range(1, 16):
        stuck = answer(stuck, c, "m-s", k % 5 == 0)
    assert evaluate(G_STUCK, stuck, c)["status"] == "struggling"
    learner = fresh(full)
    for k in range(15):
        learner = answer(learner, c, "m-s", k >= 3)
        assert evaluate(G_STUCK, learner, c)["status"] != "struggling"
