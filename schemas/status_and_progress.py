"""The status-and-progress response: the one statement of its contract.

Field names, enums and ranges are status-and-progress-api.txt's field tables
(where its samples disagree, e.g. a target ``"completed"``, the tables win).
``api/openapi.py`` serves these models' JSON Schemas, and
tests/unit/test_status_and_progress.py holds the rows the processors derive to
them. The worker never builds these models: it writes rows as JSON bytes
(processors/rows.py) for every attempt, and a model per row would cost the
fold's hot path; the test, not a run-time check, keeps the two equal.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

from schemas.events import EntityId, RefId
from schemas.limits import MAX_TARGETS_PER_GOAL, MAX_TOPICS_PER_GOAL
from schemas.transitions import GoalStatus

__all__ = [
    "MAX_WORK_REMAINING",
    "HistoryPage",
    "HistoryPoint",
    "ModuleTarget",
    "NextPage",
    "NextPoints",
    "ObjectiveTarget",
    "Progress",
    "RegistrationRow",
    "StatusAndProgress",
    "StatusAndProgressPage",
    "TargetStatus",
    "TopicWorkRemaining",
    "WorkRemaining",
]

#: The contract's ceiling on a work-remaining prediction (items).
MAX_WORK_REMAINING = 30

#: A target's status: a goal's, without ``complete_max_work``.
TargetStatus = Literal["complete", "in_progress", "struggling", "no_work"]
#: Progress towards completion, 0 to 1.
Progress: TypeAlias = Annotated[float, Field(ge=0.0, le=1.0)]
#: Further items predicted, 0 to 30, or -1 before any work gives an estimate.
WorkRemaining: TypeAlias = Annotated[int, Field(ge=-1, le=MAX_WORK_REMAINING)]


def _not_null(value: object) -> object:
    if value is None:
        raise ValueError("absent when there is none, never null")
    return value


def _no_default(schema: JsonDict) -> None:
    schema.pop("default", None)


def _absent(description: str) -> Any:
    """An optional field that the body leaves out, never sends as null (the
    contract's "Absent if ..."); with :data:`_NOT_NULL` and ``| SkipJsonSchema
    [None]``, its schema is the value's alone and not required."""
    return Field(default=None, description=description, json_schema_extra=_no_default)


_NOT_NULL = BeforeValidator(_not_null)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ObjectiveTarget(_Model):
    """A target of a goal whose targets are learning objectives."""

    target_id: RefId
    status: TargetStatus
    progress: Progress


class ModuleTarget(_Model):
    """A target of a goal whose targets are modules."""

    module_id: RefId
    status: TargetStatus
    progress: Progress


class TopicWorkRemaining(_Model):
    """The work-remaining predictions of one topic of the goal.

    The contract calls ``min_work_remaining`` "not yet implemented, always -1";
    this project implements it as the best case (docs/analytics.md, "Topics").
    """

    topic_id: RefId
    min_work_remaining: WorkRemaining
    average_work_remaining: WorkRemaining


class StatusAndProgress(_Model):
    """One registration on one goal: a ``status_and_progress[]`` item, the row
    the read model stores and serves as it is."""

    goal_id: EntityId
    status: GoalStatus
    progress: Progress
    work_remaining: WorkRemaining
    #: All of one kind, as the goal's targets are (schemas/events.py).
    targets: (
        Annotated[
            list[ObjectiveTarget], Field(min_length=1, max_length=MAX_TARGETS_PER_GOAL)
        ]
        | Annotated[
            list[ModuleTarget], Field(min_length=1, max_length=MAX_TARGETS_PER_GOAL)
        ]
    )
    topic_work_remaining: Annotated[
        Annotated[
            list[TopicWorkRemaining],
            Field(min_length=1, max_length=MAX_TOPICS_PER_GOAL),
        ]
        | SkipJsonSchema[None],
        _NOT_NULL,
        _absent("absent when the goal defines no topics"),
    ]


class RegistrationRow(_Model):
    """A ``data[]`` item: one registration, one item per requested goal."""

    registration_id: EntityId
    status_and_progress: list[StatusAndProgress]


class NextPage(_Model):
    """Where the next page starts; absent on the last page."""

    registration_offset: Annotated[int, Field(ge=0)]
    registrations_per_page: Annotated[int, Field(ge=1)]


class StatusAndProgressPage(_Model):
    """The body of both status-and-progress endpoints (the registration's has
    one ``data`` item and no ``next``)."""

    query: dict[str, Any] = Field(description="the request's body, echoed")
    column_headers: list[EntityId]
    data: list[RegistrationRow]
    next: Annotated[
        NextPage | SkipJsonSchema[None], _NOT_NULL, _absent("absent on the last page")
    ]


class HistoryPoint(_Model):
    """Where a registration was on a goal at a time: a row's goal-level fields
    (processors/history.py)."""

    at: AwareDatetime = Field(description="the learner's time of the point")
    status: GoalStatus
    progress: Progress
    work_remaining: WorkRemaining


class NextPoints(_Model):
    """Where the next page of points starts; absent on the last page."""

    point_offset: Annotated[int, Field(ge=0)]
    points_per_page: Annotated[int, Field(ge=1)]


class HistoryPage(_Model):
    """The body of ``GET …/status-and-progress/history``: a page of a
    registration's timeline on one goal, oldest point first."""

    registration_id: EntityId
    goal_id: EntityId
    total: Annotated[int, Field(ge=0, description="points in the whole timeline")]
    points: list[HistoryPoint]
    next: Annotated[
        NextPoints | SkipJsonSchema[None], _NOT_NULL, _absent("absent on the last page")
    ]
