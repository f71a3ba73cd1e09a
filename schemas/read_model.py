"""Redis key layout of the read model, shared by the worker (writer) and the API.

See docs/read-model.md. Every value is ready to serve: rows are the JSON bytes of
one ``status_and_progress[]`` item, so a page is assembled by concatenation.

Generations: the read model lives in one *generation* at a time, named by the
STRING ``<prefix>:meta:generation`` (absent or ``0``: generation 0). Generation
0's keys are ``<prefix>:…``; generation ``n > 0``'s are ``<prefix>:g<n>:…``.
``mastery rebuild --flush`` builds a complete new generation beside the live
one and switches the pointer in one step; readers resolve the pointer in the
same Lua call that reads (:data:`NAMESPACE_LUA`), so a page never mixes two
generations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

__all__ = ["CHANGES_MAXLEN", "NAMESPACE_LUA", "ReadModelKeys"]

#: Entries kept (approximately, ``XADD MAXLEN ~``) in a learning instance's
#: change stream: the window in which a reconnecting dashboard resumes without
#: a fresh snapshot (docs/dashboard.md).
CHANGES_MAXLEN = 10_000

#: Lua prologue of every script that reads the read model: from ``ARGV[1]``
#: (the prefix) it sets ``p``, the namespace of the current generation, exactly
#: as :attr:`ReadModelKeys.namespace` builds it.
NAMESPACE_LUA = """
local p = ARGV[1]
local generation = redis.call('GET', ARGV[1] .. ':meta:generation')
if generation and generation ~= '0' then p = ARGV[1] .. ':g' .. generation end
"""


@dataclass(frozen=True, slots=True)
class ReadModelKeys:
    """Key builders under one prefix (``ms`` by default), in one generation."""

    prefix: str = "ms"
    generation: int = 0

    def __post_init__(self) -> None:
        if self.generation < 0:
            raise ValueError("a generation is >= 0")

    @property
    def namespace(self) -> str:
        """The prefix of this generation's keys."""
        if self.generation == 0:
            return self.prefix
        return f"{self.prefix}:g{self.generation}"

    def in_generation(self, generation: int) -> ReadModelKeys:
        """The same layout in another generation."""
        return replace(self, generation=generation)

    def current_generation(self) -> str:
        """STRING: the number of the generation readers use (absent: 0).
        Not namespaced: it names the namespace."""
        return f"{self.prefix}:meta:generation"

    def generation_counter(self) -> str:
        """STRING: INCR'd to number a new generation (never reused)."""
        return f"{self.prefix}:meta:generation-counter"

    def rebuilds(self) -> str:
        """STRING: INCR'd by ``mastery rebuild`` (without ``--flush``) after
        its last write into the live generation. Its rows come from the
        changelog, which can be behind a running worker's last batches; a
        worker that sees the count change derives its part again (app/worker.py,
        ``_run_read_model_watch``). Not namespaced."""
        return f"{self.prefix}:meta:rebuilds"

    def broker_offsets(self) -> str:
        """HASH ``<topic>:<partition>`` -> the highest end offset a worker has
        seen on the broker (app/broker_watch.py). Not namespaced: it describes
        the broker, not a generation of the read model."""
        return f"{self.prefix}:meta:broker-offsets"

    def broker_loss(self) -> str:
        """STRING: JSON :class:`schemas.broker_status.BrokerLoss`, set by the
        worker that found the broker's log shorter than it was; while it
        exists the API's ``/readyz`` and ingest answer 503. ``mastery
        broker-reset`` deletes it. Not namespaced."""
        return f"{self.prefix}:meta:broker-loss"

    def worker_heartbeat(self) -> str:
        """STRING: JSON ``{"by", "at"}`` that every running worker refreshes,
        with a time to live (``MASTERY_WORKER_HEARTBEAT_TTL_S``); its absence
        fails the API's ``/readyz``. Not namespaced."""
        return f"{self.prefix}:meta:worker-heartbeat"

    def deployment_keys(self) -> tuple[str, ...]:
        """Keys under the bare prefix that belong to no generation."""
        return (
            self.current_generation(),
            self.generation_counter(),
            self.rebuilds(),
            self.broker_offsets(),
            self.broker_loss(),
            self.worker_heartbeat(),
        )

    def owns(self, key: str) -> bool:
        """Is ``key`` one of this generation's keys? (Generation 0's namespace
        is the bare prefix, so the other generations' keys and the
        :meth:`deployment_keys` are excluded explicitly.)"""
        head = self.namespace + ":"
        if not key.startswith(head):
            return False
        if self.generation != 0:
            return True
        rest = key[len(head) :]
        return not (_OTHER_GENERATION.match(rest) or key in self.deployment_keys())

    def pattern(self) -> str:
        """SCAN pattern that covers this generation's keys (filter with
        :meth:`owns`: generation 0's pattern also matches the others')."""
        return f"{self.namespace}:*"

    def learning_instance(self, li_id: str) -> str:
        """STRING: JSON ``{"partner_id": ...}`` (and ``"title"`` when it has
        one); exists once the LI was created."""
        return f"{self.namespace}:li:{li_id}"

    def learners(self, li_id: str) -> str:
        """ZSET of the LI's learner registrations, scored by creation order."""
        return f"{self.namespace}:li:{li_id}:learners"

    def instructors(self, li_id: str) -> str:
        """SET of user ids registered as instructors of the LI."""
        return f"{self.namespace}:li:{li_id}:instructors"

    def registration(self, registration_id: str) -> str:
        """STRING: JSON ``{"learning_instance_id", "user_id", "role"}`` (and
        ``"display_name"`` when it has one)."""
        return f"{self.namespace}:reg:{registration_id}"

    def goal(self, goal_id: str) -> str:
        """STRING: the id of the goal's learning instance."""
        return f"{self.namespace}:goal:{goal_id}"

    def goal_template(self, goal_id: str) -> str:
        """STRING: the row served for a registration with no stored row yet."""
        return f"{self.namespace}:goal:{goal_id}:template"

    def goal_names(self, goal_id: str) -> str:
        """STRING: JSON ``{"title", "targets": {id: name}}`` of the goal, the
        names the catalog gives (either may be absent); the dashboard's."""
        return f"{self.namespace}:goal:{goal_id}:names"

    def learner_names(self, li_id: str) -> str:
        """HASH learner registration id -> its display name (only named ones)."""
        return f"{self.namespace}:li:{li_id}:names"

    def materialized(self) -> str:
        """STRING: JSON ``{"by", "at"}``, set when the read model has been
        materialized (a worker's start-up re-derivation, ``mastery rebuild``).
        Its absence (Redis lost or flushed) makes the API's ``/readyz`` fail."""
        return f"{self.namespace}:meta:materialized"

    def row(self, registration_id: str, goal_id: str) -> str:
        """STRING: the registration's ``status_and_progress[]`` item for the goal."""
        return f"{self.namespace}:row:{registration_id}:{goal_id}"

    def history(self, registration_id: str, goal_id: str) -> str:
        """STRING: the registration's timeline on the goal, JSON ``[{"at",
        "status", "progress", "work_remaining"}, ...]``, oldest first
        (processors/history.py); absent until its first point."""
        return f"{self.namespace}:hist:{registration_id}:{goal_id}"

    def goals(self, li_id: str) -> str:
        """SET of the LI's goal ids (the dashboard's goal list)."""
        return f"{self.namespace}:li:{li_id}:goals"

    def learner_registrations(self, li_id: str) -> str:
        """HASH user id -> the user's learner registration in the LI."""
        return f"{self.namespace}:li:{li_id}:learner-registrations"

    def changes(self, li_id: str) -> str:
        """STREAM of the LI's changed rows (fields ``r``, ``g``, ``row``).

        Not in a generation: a live stream follows it across a rebuild's
        switch, and deleting a generation leaves it (:meth:`owns`)."""
        return f"{self.prefix}:changes:{li_id}"

    def parse_row(self, key: str) -> tuple[str, str] | None:
        """``(registration_id, goal_id)`` of a :meth:`row` key, else ``None``.

        Ids are :data:`schemas.events.EntityId`, which have no ``:``.
        """
        head = f"{self.namespace}:row:"
        if not key.startswith(head):
            return None
        reg, sep, goal = key[len(head) :].partition(":")
        return (reg, goal) if sep and reg and goal and ":" not in goal else None

    def parse_goal(self, key: str) -> str | None:
        """The goal id of a :meth:`goal` key (not its template), else ``None``."""
        head = f"{self.namespace}:goal:"
        if not key.startswith(head):
            return None
        goal = key[len(head) :]
        return goal if goal and ":" not in goal else None

    def parse_registration(self, key: str) -> str | None:
        """The registration id of a :meth:`registration` key, else ``None``."""
        head = f"{self.namespace}:reg:"
        if not key.startswith(head):
            return None
        reg = key[len(head) :]
        return reg if reg and ":" not in reg else None


#: Keys under the bare prefix that generation 0 does not own: other
#: generations' and the change streams (:meth:`ReadModelKeys.changes`).
_OTHER_GENERATION = re.compile(r"(g[0-9]+|changes):")
