"""The topics' names, and each event's topic and key (docs/events.md).

:class:`TopicNames` names every topic under one prefix and routes an event to
its topic and key; :data:`AnyEvent` is the union of the events produced. Which
partition a key goes to is processors/partitioning.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import (
    AttemptGraded,
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    RegistrationCreated,
)

__all__ = ["AnyEvent", "TopicNames"]

AnyEvent = (
    LearningInstanceCreated
    | RegistrationCreated
    | GoalDefined
    | ModuleTagged
    | AttemptGraded
)


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The three topics of the system, named under one prefix.

    - ``<prefix>.catalog.v1``: LearningInstanceCreated, GoalDefined, ModuleTagged;
      small reference data that every worker reads whole.
    - ``<prefix>.registration-events.v1``: RegistrationCreated and AttemptGraded,
      keyed by registration_id, so one registration's creation and attempts are
      totally ordered on one partition.
    - ``<prefix>.dead-letter.v1``: rejected records with their reason.
    - ``<prefix>.status-changes.v1``: the worker's StatusChanged records
      (schemas/transitions.py), keyed by registration_id; the notifier reads it.
    """

    prefix: str = "mastery"

    @property
    def catalog(self) -> str:
        return f"{self.prefix}.catalog.v1"

    @property
    def registration_events(self) -> str:
        return f"{self.prefix}.registration-events.v1"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dead-letter.v1"

    @property
    def status_changes(self) -> str:
        return f"{self.prefix}.status-changes.v1"

    @property
    def selfcheck(self) -> str:
        return f"{self.prefix}.broker-selfcheck"

    def route(self, event: AnyEvent) -> tuple[str, str]:
        """(topic, key) an event is produced to."""
        match event:
            case RegistrationCreated() | AttemptGraded():
                return self.registration_events, event.registration_id
            case LearningInstanceCreated():
                return self.catalog, f"li:{event.learning_instance_id}"
            case GoalDefined():
                return self.catalog, f"goal:{event.goal_id}"
            case ModuleTagged():
                return self.catalog, f"module:{event.partner_id}:{event.module_id}"
        raise TypeError(f"not an event: {type(event).__name__}")  # pragma: no cover
