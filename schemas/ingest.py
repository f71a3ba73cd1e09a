"""Request and response bodies of the ingest and admin endpoints (docs/ingest.md).

The API turns each request into the events of :mod:`schemas.events`; these
models only describe what a client sends and gets back.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from schemas.events import (
    BKTParameters,
    CompletionCriteria,
    DisplayName,
    EntityId,
    ObjectiveList,
    RefId,
    TargetList,
    Timestamp,
    TopicMap,
    check_topics_row_bound,
)
from schemas.limits import MAX_OBJECTIVES_PER_MODULE

__all__ = [
    "MAX_BATCH_EVENTS",
    "Accepted",
    "BatchEvents",
    "BatchGradedEvent",
    "BatchResult",
    "CreateLearningInstance",
    "CreateRegistration",
    "DefineGoal",
    "EventResult",
    "GradedEvent",
    "TagModule",
]

#: Events per batch request (``/batch-events``, xAPI arrays, Caliper envelopes).
MAX_BATCH_EVENTS = 500


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CreateLearningInstance(_Body):
    """``POST /learning-instances``; the partner is the caller's (token)."""

    learning_instance_id: EntityId | None = Field(
        default=None, description="chosen by the server (a UUID) when absent"
    )
    title: DisplayName | None = Field(
        default=None, description="the course section's title, for the dashboard"
    )


class CreateRegistration(_Body):
    """``POST /registrations``: a learner or an instructor joins an LI."""

    registration_id: EntityId | None = Field(
        default=None, description="chosen by the server (a UUID) when absent"
    )
    learning_instance_id: EntityId
    user_id: EntityId
    role: Literal["learner", "instructor"]
    display_name: DisplayName | None = Field(
        default=None,
        description="the name the dashboard shows; sent again, it renames the "
        "registration (without it, removes the name)",
    )


class DefineGoal(_Body):
    """``PUT /goals/{goal_id}``: define or redefine a scoped goal."""

    learning_instance_id: EntityId
    targets: TargetList
    topics: TopicMap | None = None
    completion_criteria: CompletionCriteria = CompletionCriteria()
    title: DisplayName | None = Field(default=None, description="the goal's title")

    _topics_within_row_bound = field_validator("topics")(check_topics_row_bound)


class TagModule(_Body):
    """``PUT /modules/{module_id}``: the objectives a module practises."""

    learning_objective_ids: ObjectiveList
    parameters: (
        Annotated[
            dict[RefId, BKTParameters], Field(max_length=MAX_OBJECTIVES_PER_MODULE)
        ]
        | None
    ) = None
    module_name: DisplayName | None = Field(
        default=None, description="the module's name, for the dashboard"
    )
    objective_names: (
        Annotated[dict[RefId, DisplayName], Field(max_length=MAX_OBJECTIVES_PER_MODULE)]
        | None
    ) = Field(default=None, description="names of the tagged objectives")


class GradedEvent(_Body):
    """``POST /registrations/{reg_id}/graded-events``: one graded attempt."""

    module_id: RefId
    is_correct: StrictBool
    interaction_end_time: Timestamp
    goal_id: EntityId | None = None
    attempt_id: EntityId | None = Field(
        default=None,
        description="the client's id of the attempt; only a client id makes a "
        "retry idempotent (the server picks a random one when absent)",
    )


class BatchGradedEvent(GradedEvent):
    """One item of ``POST /batch-events``."""

    registration_id: EntityId


class BatchEvents(BaseModel):
    """``POST /batch-events``: items are validated one by one (see results)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    events: list[dict[str, object]] = Field(
        description=f"at most {MAX_BATCH_EVENTS} graded events (413 beyond)"
    )


class Accepted(BaseModel):
    """``202``: the event was acknowledged by the broker; the worker applies
    it asynchronously."""

    status: Literal["accepted"] = "accepted"
    event_id: str
    learning_instance_id: str | None = None
    partner_id: str | None = None
    registration_id: str | None = None
    goal_id: str | None = None
    module_id: str | None = None
    attempt_id: str | None = None


class EventResult(BaseModel):
    """The fate of one event, statement or Caliper event of a batch."""

    index: int = Field(description="position in the request")
    status: Literal["accepted", "rejected"]
    event_id: str | None = None
    attempt_id: str | None = None
    registration_id: str | None = None
    code: str | None = Field(default=None, description="why it was rejected")
    reason: str | None = None


class BatchResult(BaseModel):
    """``207``: one result per item, in request order."""

    accepted: int
    rejected: int
    results: list[EventResult]
