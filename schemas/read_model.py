"""Redis key layout of the read model, shared by the worker (writer) and the API.

See docs/read-model.md. Every value is ready to serve: rows are the JSON bytes of
one ``status_and_progress[]`` item, so a page is assembled by concatenation.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CHANGES_MAXLEN", "ReadModelKeys"]

#: Entries kept (approximately, ``XADD MAXLEN ~``) in a learning instance's
#: change stream: the window in which a reconnecting dashboard resumes without
#: a fresh snapshot (docs/dashboard.md).
CHANGES_MAXLEN = 10_000


@dataclass(frozen=True, slots=True)
class ReadModelKeys:
    """Key builders under one prefix (``ms`` by default)."""

    prefix: str = "ms"

    def learning_instance(self, li_id: str) -> str:
        """STRING: JSON ``{"partner_id": ...}``; exists once the LI was created."""
        return f"{self.prefix}:li:{li_id}"

    def learners(self, li_id: str) -> str:
        """ZSET of the LI's learner registrations, scored by creation order."""
        return f"{self.prefix}:li:{li_id}:learners"

    def instructors(self, li_id: str) -> str:
        """SET of user ids registered as instructors of the LI."""
        return f"{self.prefix}:li:{li_id}:instructors"

    def goals(self, li_id: str) -> str:
        """SET of the LI's goal ids (the dashboard's goal list)."""
        return f"{self.prefix}:li:{li_id}:goals"

    def learner_registrations(self, li_id: str) -> str:
        """HASH user id -> the user's learner registration in the LI."""
        return f"{self.prefix}:li:{li_id}:learner-registrations"

    def changes(self, li_id: str) -> str:
        """STREAM of the LI's changed rows: fields ``r`` (registration), ``g``
        (goal), ``row`` (the new row), appended in the batch's MULTI/EXEC."""
        return f"{self.prefix}:li:{li_id}:changes"

    def registration(self, registration_id: str) -> str:
        """STRING: JSON ``{"learning_instance_id", "user_id", "role"}``."""
        return f"{self.prefix}:reg:{registration_id}"

    def goal(self, goal_id: str) -> str:
        """STRING: the id of the goal's learning instance."""
        return f"{self.prefix}:goal:{goal_id}"

    def goal_template(self, goal_id: str) -> str:
        """STRING: the row served for a registration with no stored row yet."""
        return f"{self.prefix}:goal:{goal_id}:template"

    def materialized(self) -> str:
        """STRING: JSON ``{"by", "at"}``, set when the read model has been
        materialized (a worker's start-up re-derivation, ``mastery rebuild``).
        Its absence (Redis lost or flushed) makes the API's ``/readyz`` fail."""
        return f"{self.prefix}:meta:materialized"

    def row(self, registration_id: str, goal_id: str) -> str:
        """STRING: the registration's ``status_and_progress[]`` item for the goal."""
        return f"{self.prefix}:row:{registration_id}:{goal_id}"

    def parse_row(self, key: str) -> tuple[str, str] | None:
        """``(registration_id, goal_id)`` of a :meth:`row` key, else ``None``.

        Ids are :data:`schemas.events.EntityId`, which have no ``:``.
        """
        head = f"{self.prefix}:row:"
        if not key.startswith(head):
            return None
        reg, sep, goal = key[len(head) :].partition(":")
        return (reg, goal) if sep and reg and goal and ":" not in goal else None

    def parse_goal(self, key: str) -> str | None:
        """The goal id of a :meth:`goal` key (not its template), else ``None``."""
        head = f"{self.prefix}:goal:"
        if not key.startswith(head):
            return None
        goal = key[len(head) :]
        return goal if goal and ":" not in goal else None

    def parse_registration(self, key: str) -> str | None:
        """The registration id of a :meth:`registration` key, else ``None``."""
        head = f"{self.prefix}:reg:"
        if not key.startswith(head):
            return None
        reg = key[len(head) :]
        return reg if reg and ":" not in reg else None
