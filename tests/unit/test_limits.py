"""schemas/limits.py: a goal definition at the limits makes rows within
MAX_ROW_BYTES, and one beyond them is refused naming the field and limit."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from processors.catalog import Catalog
from processors.rows import goal_template
from schemas.events import GoalDefined, LearningInstanceCreated, Target
from schemas.limits import (
    MAX_MEMBERS_PER_TOPIC,
    MAX_ROW_BYTES,
    MAX_TARGETS_PER_GOAL,
    MAX_TOPICS_PER_GOAL,
    row_bytes_bound,
)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _goal(targets: list[str], topics: dict[str, list[str]] | None) -> GoalDefined:
    return GoalDefined(
        event_id="e-goal",
        occurred_at=NOW,
        goal_id="g" * 128,
        learning_instance_id="li-1",
        targets=[Target(module_id=t) for t in targets],
        topics=topics,
    )


@pytest.mark.parametrize("id_length", [1, 40, 200])
def test_a_goal_within_the_bound_makes_rows_within_it(id_length: int) -> None:
    targets = [f"{i:03d}".ljust(id_length, "m") for i in range(MAX_TARGETS_PER_GOAL)]
    topics = {
        f"{k:02d}".ljust(id_length, "t"): targets[k::MAX_TOPICS_PER_GOAL]
        for k in range(MAX_TOPICS_PER_GOAL)
    }
    while row_bytes_bound(targets, topics) > MAX_ROW_BYTES:
        targets.pop()
        topics = {t: [m for m in ms if m in targets] for t, ms in topics.items()}
        topics = {t: ms for t, ms in topics.items() if ms}
    goal = _goal(targets, topics)
    catalog = Catalog()
    catalog.apply(
        LearningInstanceCreated(
            event_id="e-li",
            occurred_at=NOW,
            learning_instance_id="li-1",
            partner_id="p1",
        )
    )
    catalog.apply(goal)
    row = goal_template(goal, catalog)
    assert len(row) <= row_bytes_bound(targets, topics) <= MAX_ROW_BYTES


@pytest.mark.parametrize(
    ("targets", "topics", "field", "limit"),
    [
        (
            ["m1"],
            {f"t{i}": ["m1"] for i in range(MAX_TOPICS_PER_GOAL + 1)},
            "topics",
            50,
        ),
        (["m1"], {"t": ["m1"] * (MAX_MEMBERS_PER_TOPIC + 1)}, "topics.t", 200),
        (
            [f"{i:03d}" + "m" * 400 for i in range(MAX_TARGETS_PER_GOAL)],
            None,
            "targets",
            MAX_ROW_BYTES,
        ),
    ],
)
def test_a_goal_beyond_a_limit_is_refused(
    targets: list[str], topics: dict[str, list[str]] | None, field: str, limit: int
) -> None:
    with pytest.raises(ValidationError) as caught:
        _goal(targets, topics)
    (error,) = caught.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == field
    assert str(limit) in error["msg"] or error["ctx"].get("max_length") == limit
