"""Every Redis key of the read model, built here and nowhere else.

See docs/read-model.md, whose key table matches these builders. Keys a
learning instance's page reads carry the hash tag ``{<li>}``, so they share one
Redis Cluster slot and one Lua script (or one MULTI/EXEC) may name them all in
``KEYS[]``. The deployment's keys share the slot of ``{<prefix>}``; lookups by
another id (a registration's, a goal's) hash on their whole name.

Generations: the read model lives in one *generation* at a time, named by the
STRING ``<prefix>:meta:{<prefix>}:generation`` (absent or ``0``: generation
0). Generation 0's keys are ``<prefix>:…``; generation ``n > 0``'s are
``<prefix>:g<n>:…``. The pointer is in the deployment's slot, so a reader
resolves it first and then reads that generation's keys
(:class:`infra.read_model.generation.Generation` says why that stays correct).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

__all__ = ["CHANGES_MAXLEN", "ReadModelKeys", "hash_tag"]

#: Entries kept (approximately, ``XADD MAXLEN ~``) in a learning instance's
#: change stream: the window in which a reconnecting dashboard resumes without
#: a fresh snapshot (docs/dashboard.md).
CHANGES_MAXLEN = 10_000


def hash_tag(li_id: str) -> str:
    """``{li}``: the part of a key Redis Cluster hashes to pick its slot."""
    return "{" + li_id + "}"


@dataclass(frozen=True, slots=True)
class ReadModelKeys:
    """Key builders under one prefix (``ms`` by default), in one generation."""

    prefix: str = "ms"
    generation: int = 0

    def __post_init__(self) -> None:
        if self.generation < 0:
            raise ValueError("a generation is >= 0")
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError("a read-model prefix has no braces (hash tags)")

    @property
    def namespace(self) -> str:
        """The prefix of this generation's keys."""
        if self.generation == 0:
            return self.prefix
        return f"{self.prefix}:g{self.generation}"

    def in_generation(self, generation: int) -> ReadModelKeys:
        """The same layout in another generation."""
        return replace(self, generation=generation)

    # -- deployment-wide: no generation, all in one slot of their own --------

    @property
    def _meta(self) -> str:
        """``<prefix>:meta:{<prefix>}``: the deployment's keys share a slot (a
        worker reads the pointer and the rebuild count in one MGET, ``mastery
        broker-reset`` writes two in one MULTI/EXEC)."""
        return f"{self.prefix}:meta:{hash_tag(self.prefix)}"

    def current_generation(self) -> str:
        """STRING: the number of the generation readers use (absent: 0).
        Not namespaced: it names the namespace."""
        return f"{self._meta}:generation"

    def generation_counter(self) -> str:
        """STRING: INCR'd to number a new generation (never reused)."""
        return f"{self._meta}:generation-counter"

    def rebuilds(self) -> str:
        """STRING: INCR'd by ``mastery rebuild`` (without ``--flush``) after
        its last write into the live generation; a worker that sees the count
        change derives its part again (its changelog can be behind)."""
        return f"{self._meta}:rebuilds"

    def broker_offsets(self) -> str:
        """HASH ``<topic>:<partition>`` -> the highest end offset a worker has
        seen on the broker (app/worker/broker_watch.py)."""
        return f"{self._meta}:broker-offsets"

    def broker_loss(self) -> str:
        """STRING: JSON :class:`schemas.broker_status.BrokerLoss`, set by the
        worker that found the broker's log shorter than it was; while it
        exists the API's ``/readyz`` and ingest answer 503."""
        return f"{self._meta}:broker-loss"

    def worker_heartbeat(self) -> str:
        """STRING: JSON ``{"by", "at"}`` that every running worker refreshes,
        with a time to live; its absence fails the API's ``/readyz``."""
        return f"{self._meta}:worker-heartbeat"

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

    def changes(self, li_id: str) -> str:
        """STREAM of the LI's changed rows (fields ``r``, ``g``, ``row``), in
        the LI's slot. Not in a generation: a live stream follows it across a
        rebuild's switch, and deleting a generation leaves it (:meth:`owns`)."""
        return f"{self.prefix}:changes:{hash_tag(li_id)}"

    # -- one generation: lookups by another id -------------------------------

    def materialized(self) -> str:
        """STRING: JSON ``{"by", "at"}``, set when the read model has been
        materialized (a worker's start-up re-derivation, ``mastery rebuild``).
        Its absence (Redis lost or flushed) makes the API's ``/readyz`` fail
        and turns an unknown id into a 503."""
        return f"{self.namespace}:meta:materialized"

    def registration(self, registration_id: str) -> str:
        """STRING: JSON ``{"learning_instance_id", "user_id", "role"}`` (and
        ``"display_name"``): the ingest's lookup, and how a registration's
        page finds its learning instance's slot."""
        return f"{self.namespace}:reg:{registration_id}"

    def goal(self, goal_id: str) -> str:
        """STRING: the id of the goal's learning instance (the ingest's lookup)."""
        return f"{self.namespace}:goal:{goal_id}"

    # -- one generation, one learning instance: the slot of {li} -------------

    def learning_instance(self, li_id: str) -> str:
        """STRING: JSON ``{"partner_id": ...}`` (and ``"title"``); exists once
        the LI was created. Every read of the LI's slot checks it first."""
        return f"{self.namespace}:li:{hash_tag(li_id)}"

    def learners(self, li_id: str) -> str:
        """ZSET of the LI's learner registrations, scored by creation order."""
        return f"{self.learning_instance(li_id)}:learners"

    def instructors(self, li_id: str) -> str:
        """SET of user ids registered as instructors of the LI."""
        return f"{self.learning_instance(li_id)}:instructors"

    def member(self, li_id: str, registration_id: str) -> str:
        """STRING: the registration's facts (as :meth:`registration`) in its
        LI's slot, read by the registration's page."""
        return f"{self.learning_instance(li_id)}:reg:{registration_id}"

    def goals(self, li_id: str) -> str:
        """SET of the LI's goal ids: a page's goals must be members."""
        return f"{self.learning_instance(li_id)}:goals"

    def goal_template(self, li_id: str, goal_id: str) -> str:
        """STRING: the row served for a registration with no stored row yet."""
        return f"{self.learning_instance(li_id)}:goal:{goal_id}:template"

    def goal_names(self, li_id: str) -> str:
        """HASH goal id -> JSON ``{"title", "targets": {id: name}}``, the
        names the catalog gives (either may be absent); the dashboard's."""
        return f"{self.learning_instance(li_id)}:goal-names"

    def learner_names(self, li_id: str) -> str:
        """HASH learner registration id -> its display name (only named ones)."""
        return f"{self.learning_instance(li_id)}:names"

    def learner_registrations(self, li_id: str) -> str:
        """HASH user id -> the user's learner registration in the LI."""
        return f"{self.learning_instance(li_id)}:learner-registrations"

    def row(self, li_id: str, registration_id: str, goal_id: str) -> str:
        """STRING: the registration's ``status_and_progress[]`` item for the goal."""
        return f"{self.learning_instance(li_id)}:row:{registration_id}:{goal_id}"

    def history(self, li_id: str, registration_id: str, goal_id: str) -> str:
        """STRING: the registration's timeline on the goal, JSON ``[{"at",
        "status", "progress", "work_remaining"}, ...]``, oldest first
        (processors/history.py); absent until its first point."""
        return f"{self.learning_instance(li_id)}:hist:{registration_id}:{goal_id}"

    # -- scanning a generation ----------------------------------------------

    def owns(self, key: str) -> bool:
        """Is ``key`` one of this generation's keys? (Generation 0's namespace
        is the bare prefix, so the other generations' keys, the change
        streams and the :meth:`deployment_keys` are excluded explicitly.)"""
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

    def is_sentinel(self, key: str) -> bool:
        """Is ``key`` one a read checks before trusting its slot (an LI's
        :meth:`learning_instance` or :meth:`member` key)? Deleting a
        generation removes these first (app/cli/rebuild.py)."""
        li = self.parse_learning_instance(key)
        if li is not None:
            return True
        head = self.namespace + ":li:{"
        if not key.startswith(head):
            return False
        _, sep, rest = key[len(head) :].partition("}:reg:")
        return bool(sep) and bool(rest) and ":" not in rest

    def parse_learning_instance(self, key: str) -> str | None:
        """The LI id of a :meth:`learning_instance` key, else ``None``.
        Ids are :data:`schemas.events.EntityId`: no ``:``, no braces."""
        head = self.namespace + ":li:{"
        if not key.startswith(head) or not key.endswith("}"):
            return None
        li = key[len(head) : -1]
        return li if li and not _NOT_AN_ID.search(li) else None

    def parse_registration(self, key: str) -> str | None:
        """The registration id of a :meth:`registration` key, else ``None``."""
        head = f"{self.namespace}:reg:"
        if not key.startswith(head):
            return None
        reg = key[len(head) :]
        return reg if reg and not _NOT_AN_ID.search(reg) else None


#: Keys under the bare prefix that generation 0 does not own: other
#: generations' and the change streams (:meth:`ReadModelKeys.changes`).
_OTHER_GENERATION = re.compile(r"(g[0-9]+|changes):")
_NOT_AN_ID = re.compile(r"[:{}]")
