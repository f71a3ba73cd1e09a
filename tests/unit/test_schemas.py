"""Event and API-body schemas: what is accepted, what is refused and why."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from infra.topic_names import TopicNames
from schemas.api import LearningInstanceQuery, RegistrationQuery
from schemas.events import (
    AttemptGraded,
    GoalDefined,
    ModuleTagged,
    RegistrationCreated,
    decode_event,
    encode_event,
)

BASE = {"event_id": "e-1", "occurred_at": "2026-01-01T00:00:00Z"}


def goal(**over: Any) -> dict[str, Any]:
    body = {
        **BASE,
        "type": "GoalDefined",
        "goal_id": "g-1",
        "learning_instance_id": "li-1",
        "targets": [
            {"learning_objective_id": "lo-1"},
            {"learning_objective_id": "lo-2"},
        ],
    }
    body.update(over)
    return body


def test_events_round_trip_through_json() -> None:
    events = [
        GoalDefined.model_validate(goal(topics={"t-1": ["lo-1"]})),
        ModuleTagged.model_validate(
            {
                **BASE,
                "partner_id": "p-1",
                "module_id": "m-1",
                "learning_objective_ids": ["lo-1"],
                "parameters": {
                    "lo-1": {"prior": 0.2, "learn": 0.1, "guess": 0.2, "slip": 0.1}
                },
            }
        ),
        RegistrationCreated.model_validate(
            {
                **BASE,
                "registration_id": "r-1",
                "learning_instance_id": "li-1",
                "user_id": "u-1",
                "role": "learner",
            }
        ),
        AttemptGraded.model_validate(
            {
                **BASE,
                "attempt_id": "a-1",
                "registration_id": "r-1",
                "module_id": "m-1",
                "is_correct": True,
                "interaction_end_time": "2026-01-01T00:00:01+02:00",
            }
        ),
    ]
    for event in events:
        assert decode_event(encode_event(event)) == event


def test_completion_criteria_default() -> None:
    g = GoalDefined.model_validate(goal())
    assert g.completion_criteria.min_predicted_mastery == 0.95
    assert g.completion_criteria.max_work_on_goal is None
    assert g.target_kind == "learning_objective"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (goal(targets=[]), "at least 1"),
        (
            goal(targets=[{"learning_objective_id": "a", "module_id": "b"}]),
            "exactly one",
        ),
        (goal(targets=[{}]), "exactly one"),
        (
            goal(targets=[{"learning_objective_id": "a"}, {"module_id": "b"}]),
            "all learning",
        ),
        (
            goal(
                targets=[{"learning_objective_id": "a"}, {"learning_objective_id": "a"}]
            ),
            "must not repeat",
        ),
        (goal(topics={"t": ["lo-9"]}), "not targets of this goal"),
        (goal(completion_criteria={"min_predicted_mastery": 1.5}), "less than 1"),
        (
            goal(completion_criteria={"max_work_on_goal": 0}),
            "greater than or equal to 1",
        ),
        (goal(goal_id="has space"), "pattern"),
        (goal(occurred_at="2026-01-01T00:00:00"), "timezone"),
        (goal(colour="red"), "Extra inputs"),
    ],
)
def test_invalid_goals_are_refused_with_a_reason(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        GoalDefined.model_validate(body)


def test_module_parameters_must_be_in_range_and_for_tagged_objectives() -> None:
    tagged = {
        **BASE,
        "partner_id": "p",
        "module_id": "m",
        "learning_objective_ids": ["lo-1"],
    }
    # guess + slip >= 1 cannot pass: each of them is below 0.5 (bkt_params).
    with pytest.raises(
        ValidationError, match=r"guess\n.*less than or equal to 0\.4999"
    ):
        ModuleTagged.model_validate(
            {
                **tagged,
                "parameters": {
                    "lo-1": {"prior": 0.5, "learn": 0.1, "guess": 0.6, "slip": 0.5}
                },
            }
        )
    with pytest.raises(ValidationError, match="not tagged with"):
        ModuleTagged.model_validate(
            {
                **tagged,
                "parameters": {
                    "lo-2": {"prior": 0.5, "learn": 0.1, "guess": 0.2, "slip": 0.1}
                },
            }
        )


def test_decode_rejects_unknown_types_and_garbage() -> None:
    with pytest.raises(ValidationError):
        decode_event(
            b'{"type": "Nope", "event_id": "e", "occurred_at": "2026-01-01T00:00:00Z"}'
        )
    with pytest.raises(ValidationError):
        decode_event(b"\xff\xfe not json")


def test_routing_keys_registration_events_by_registration() -> None:
    names = TopicNames("x")
    attempt = AttemptGraded.model_validate(
        {
            **BASE,
            "attempt_id": "a",
            "registration_id": "r-9",
            "module_id": "m",
            "is_correct": False,
            "interaction_end_time": "2026-01-01T00:00:00Z",
        }
    )
    assert names.route(attempt) == ("x.registration-events.v1", "r-9")
    assert names.route(GoalDefined.model_validate(goal())) == (
        "x.catalog.v1",
        "goal:g-1",
    )


def test_queries_accept_numeric_strings_and_refuse_the_rest() -> None:
    q = LearningInstanceQuery.model_validate(
        {"goal_ids": ["g"], "registrations_per_page": "2"}
    )
    assert (q.registration_offset, q.registrations_per_page) == (0, 2)
    assert (
        LearningInstanceQuery.model_validate({"goal_ids": ["g"]}).registrations_per_page
        == 100
    )
    for bad in (
        {"goal_ids": ["g"], "registrations_per_page": 101},
        {"goal_ids": ["g"], "registrations_per_page": False},
        {"goal_ids": ["g"] * 2},
        {"goal_ids": [f"g{i}" for i in range(51)]},
    ):
        with pytest.raises(ValidationError):
            LearningInstanceQuery.model_validate(bad)
    with pytest.raises(ValidationError):
        RegistrationQuery.model_validate({"goal_ids": ["g"], "registration_offset": 1})


def test_timestamps_must_be_strings_with_an_offset() -> None:
    attempt = {
        **BASE,
        "attempt_id": "a",
        "registration_id": "r",
        "module_id": "m",
        "is_correct": True,
        "interaction_end_time": "2026-01-01T00:00:00Z",
    }
    assert AttemptGraded.model_validate(attempt)
    for field, value in (
        ("occurred_at", 12),
        ("interaction_end_time", 1.5e9),
        ("interaction_end_time", "2026-01-01T00:00:00"),
    ):
        with pytest.raises(ValidationError, match=field):
            AttemptGraded.model_validate({**attempt, field: value})
