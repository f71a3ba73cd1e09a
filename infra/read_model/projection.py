"""What one batch writes into the read model, as typed records.

The worker and ``mastery rebuild`` collect a :class:`Projection`;
:class:`infra.read_model.writer.RedisProjector` writes it. Records carry their
learning instance, so the writer groups them by slot without parsing a key or
a value back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

import orjson

from infra.read_model.keys import ReadModelKeys
from schemas.events import GoalDefined, LearningInstanceCreated, RegistrationCreated

__all__ = [
    "GoalRecord",
    "LearningInstanceRecord",
    "Projection",
    "RegistrationFacts",
    "RegistrationRecord",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RegistrationFacts(Protocol):
    """What the read model keeps of a registration (a worker's
    ``processors.registration.RegistrationState`` has these fields)."""

    @property
    def registration_id(self) -> str: ...
    @property
    def learning_instance_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def role(self) -> Literal["learner", "instructor"]: ...
    @property
    def created_us(self) -> int: ...
    @property
    def display_name(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class LearningInstanceRecord:
    learning_instance_id: str
    partner_id: str
    title: str | None = None

    def value(self) -> bytes:
        """The stored JSON (``partner_id`` and, when there is one, ``title``)."""
        meta = {"partner_id": self.partner_id}
        if self.title is not None:
            meta["title"] = self.title
        return orjson.dumps(meta)


@dataclass(frozen=True, slots=True)
class GoalRecord:
    goal_id: str
    learning_instance_id: str
    #: the row of a learner who has done nothing yet
    template: bytes


@dataclass(frozen=True, slots=True)
class RegistrationRecord:
    registration_id: str
    learning_instance_id: str
    user_id: str
    role: Literal["learner", "instructor"]
    #: the registration's place in its learning instance's order
    created_us: int
    display_name: str | None = None

    def value(self) -> bytes:
        """The stored JSON facts (the access rules' and the ingest's)."""
        facts = {
            "learning_instance_id": self.learning_instance_id,
            "user_id": self.user_id,
            "role": self.role,
        }
        if self.display_name is not None:
            facts["display_name"] = self.display_name
        return orjson.dumps(facts)


@dataclass
class Projection:
    """The read-model writes of one batch, deduplicated (the last one wins).
    Keys map (learning instance, ...) to the value written."""

    keys: ReadModelKeys
    learning_instances: dict[str, LearningInstanceRecord] = field(default_factory=dict)
    goals: dict[str, GoalRecord] = field(default_factory=dict)
    #: (li, goal) -> JSON names (processors/rows.py: ``goal_names``)
    named_goals: dict[tuple[str, str], bytes] = field(default_factory=dict)
    registrations: dict[str, RegistrationRecord] = field(default_factory=dict)
    #: (li, registration, goal) -> the row's JSON
    rows: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    #: (li, registration, goal) -> the timeline's JSON
    histories: dict[tuple[str, str, str], bytes] = field(default_factory=dict)

    def __len__(self) -> int:
        return (
            len(self.learning_instances)
            + len(self.goals)
            + len(self.named_goals)
            + len(self.registrations)
            + len(self.rows)
            + len(self.histories)
        )

    def row(self, li_id: str, registration_id: str, goal_id: str, item: bytes) -> None:
        self.rows[li_id, registration_id, goal_id] = item

    def history(
        self, li_id: str, registration_id: str, goal_id: str, points: bytes
    ) -> None:
        self.histories[li_id, registration_id, goal_id] = points

    def learning_instance(self, event: LearningInstanceCreated) -> None:
        li = event.learning_instance_id
        self.learning_instances[li] = LearningInstanceRecord(
            li, event.partner_id, event.title
        )

    def goal(self, goal: GoalDefined, template: bytes, names: bytes = b"{}") -> None:
        """The goal's owner, template and names (the worker and ``mastery
        rebuild`` always give the names)."""
        self.goals[goal.goal_id] = GoalRecord(
            goal.goal_id, goal.learning_instance_id, template
        )
        self.goal_names(goal, names)

    def goal_names(self, goal: GoalDefined, names: bytes) -> None:
        self.named_goals[goal.learning_instance_id, goal.goal_id] = names

    def registration(self, fact: RegistrationFacts | RegistrationCreated) -> None:
        """Registration facts (for access rules) and its place in the LI's
        order. A ``RegistrationCreated`` is projected as the state it creates
        (seeding a read model; the worker projects folded states)."""
        if isinstance(fact, RegistrationCreated):
            delta = fact.occurred_at - _EPOCH
            created_us = (
                delta.days * 86_400 + delta.seconds
            ) * 1_000_000 + delta.microseconds
        else:
            created_us = fact.created_us
        self.registrations[fact.registration_id] = RegistrationRecord(
            fact.registration_id,
            fact.learning_instance_id,
            fact.user_id,
            fact.role,
            created_us,
            fact.display_name,
        )
