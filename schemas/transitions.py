"""A registration's status change on a goal: the record of the transitions topic.

The worker's batch fold (processors/batch.py, processors/transitions.py)
derives one :class:`StatusChanged` for each event that changes a learner's
status on a goal, and one when a registration first gets its rows (its
creation: ``previous_status`` is ``None``). They are produced to
``<prefix>.status-changes.v1``, keyed by ``registration_id``, in the order of
the registration's own events, and acknowledged by the broker before the
registration's new state can be checkpointed (docs/webhooks.md).

``transition_id`` is derived from the source event's ``event_id`` and the goal,
so a replay of the registration-events topic produces the same transitions
with the same ids: a consumer that sees an id again is seeing a redelivery.
"""

from __future__ import annotations

import uuid
from typing import Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict

__all__ = [
    "GOAL_STATUSES",
    "SCHEMA_VERSION",
    "GoalStatus",
    "StatusChanged",
    "transition_id",
]

SCHEMA_VERSION = 1

GoalStatus = Literal[
    "no_work", "in_progress", "struggling", "complete", "complete_max_work"
]
#: The contract's goal statuses (status-and-progress-api.txt).
GOAL_STATUSES: tuple[GoalStatus, ...] = (
    "no_work",
    "in_progress",
    "struggling",
    "complete",
    "complete_max_work",
)

#: Namespace of the transition ids (uuid5 of ``"<event_id>/<goal_id>"``).
_NAMESPACE = uuid.UUID("5d0f3b52-9a0e-4b43-9c5e-6f1e0d7c2a41")


def transition_id(event_id: str, goal_id: str) -> str:
    """The id of the transition an event caused on a goal (stable on replay)."""
    return str(uuid.uuid5(_NAMESPACE, f"{event_id}/{goal_id}"))


class StatusChanged(BaseModel):
    """One status change of one registration on one goal."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["StatusChanged"] = "StatusChanged"
    schema_version: Literal[1] = 1
    transition_id: str
    partner_id: str
    learning_instance_id: str
    registration_id: str
    user_id: str
    goal_id: str
    #: ``None`` when the registration first gets its row for the goal.
    previous_status: GoalStatus | None
    status: GoalStatus
    #: ``occurred_at`` of the event that caused the change (the learner's time).
    occurred_at: AwareDatetime
    #: The causing event: its id, and where it was read.
    event_id: str
    source_partition: int
    source_offset: int

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, raw: bytes) -> StatusChanged:
        return cls.model_validate_json(raw)
