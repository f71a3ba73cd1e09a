"""Per-registration state folded from RegistrationCreated and AttemptGraded.

The worker keeps one :class:`RegistrationState` per registration (its table
value) and writes it once per batch, so applying an attempt and the
``to_bytes``/``from_bytes`` round trip are on the hot path and kept cheap.

Idempotency: the state remembers a fingerprint of *every* attempt id it
applied (72-bit BLAKE2b digests, 12 base64 characters each, in one string),
so an attempt re-sent at any distance (a client retrying a whole
``POST /batch-events`` after a timeout, an xAPI statement sent again a week
later) is a duplicate. The chance that a new id collides with one of a
registration's n fingerprints is n / 2**72 (2e-18 per attempt at n = 5,000,
the size docs/performance.md measures: 60 KB of fingerprints). A registration
keeps at most :data:`ATTEMPTS_MAX` attempts; further ones are rejected (dead
letter with the reason), which bounds a state under the changelog's 1 MB
record limit. States written before (formats 2 and 3) remembered their last
128 ids as 48-bit fingerprints; those are kept, and checked, as ``legacy_seen``.

Redelivery: a *replay* of records already applied (a worker that crashed
before committing any offset replays its partitions from the start) is
recognized before the fingerprints, by position: the state remembers the
position (partition, offset) of the last record of its partition it has
folded in, and a record at or before it is a redelivery
(:func:`is_redelivery`). All events of a registration are on one partition
(keyed by registration id) and applied in offset order, so this is exact and
O(1). Fingerprints catch attempts *re-sent* as new records.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

import orjson

from processors.catalog import Catalog, PartnerCatalog
from processors.history import Point
from processors.mastery import ObjectiveState, apply, initial
from schemas.events import AttemptGraded, RegistrationCreated

__all__ = [
    "ATTEMPTS_MAX",
    "AttemptResult",
    "RegistrationState",
    "apply_attempt",
    "epoch_us",
    "is_redelivery",
    "register",
    "with_history",
    "with_history_of",
    "with_position",
]

#: Attempts one registration keeps (each remembered by a 12-byte
#: fingerprint: 600 KB at the bound, under Kafka's 1 MB default record size).
ATTEMPTS_MAX = 50_000
_FP = 12  # characters per fingerprint (9 digest bytes, base64)
_LEGACY_FP = 8  # formats 2 and 3: 6 digest bytes
_FORMAT = 4
#: Format 5 is format 4 plus ``display_name``, written only for a state that
#: has one (so a state without a name is byte for byte as before).
_NAMED_FORMAT = 5
#: Format 6 is format 5 (``display_name``, possibly null) plus ``history``,
#: written only for a state that has a timeline (processors/history.py).
_HISTORY_FORMAT = 6
#: format -> number of fields (2 has no position, 4 adds ``legacy_seen``)
_FORMATS = {2: 10, 3: 12, 4: 13, 5: 14, 6: 15}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RegistrationState:
    """Mastery and work of one registration. Treat the mappings as read-only.

    ``untagged_work[module]`` counts attempts without a goal_id;
    ``tagged_work[goal][module]`` counts attempts tagged with that goal.
    """

    registration_id: str
    learning_instance_id: str
    user_id: str
    role: Literal["learner", "instructor"]
    objectives: Mapping[str, ObjectiveState] = field(default_factory=dict)
    untagged_work: Mapping[str, int] = field(default_factory=dict)
    tagged_work: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    seen: str = ""
    #: ``occurred_at`` of the first RegistrationCreated, in microseconds since
    #: the epoch: the registration's place in its learning instance's order.
    created_us: int = 0
    #: Position of the last record folded in (see the module docstring);
    #: -1 when unknown (a state written before positions were kept).
    source_partition: int = -1
    source_offset: int = -1
    #: Fingerprints of a state written before format 4 (its last 128 ids).
    legacy_seen: str = ""
    #: The name the partner gave the registration (RegistrationCreated's
    #: ``display_name``); metadata for the dashboard only.
    display_name: str | None = None
    #: goal id -> its timeline, oldest first (processors/history.py).
    history: Mapping[str, tuple[Point, ...]] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Compact JSON; :meth:`from_bytes` restores an equal state."""
        named = self.display_name is not None
        if self.history:
            tail: tuple[object, ...] = (self.display_name, self.history)
            head = _HISTORY_FORMAT
        elif named:
            tail, head = (self.display_name,), _NAMED_FORMAT
        else:
            tail, head = (), _FORMAT
        return orjson.dumps(
            [
                head,
                self.registration_id,
                self.learning_instance_id,
                self.user_id,
                self.role,
                {k: v.to_json() for k, v in self.objectives.items()},
                self.untagged_work,
                self.tagged_work,
                self.seen,
                self.created_us,
                self.source_partition,
                self.source_offset,
                self.legacy_seen,
                *tail,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> RegistrationState:
        """Inverse of :meth:`to_bytes`."""
        fields = orjson.loads(data)
        head = fields[0] if isinstance(fields, list) and fields else None
        if not isinstance(head, int) or _FORMATS.get(head) != len(fields):
            raise ValueError(f"not a registration state (format {head!r})")
        _, reg, li, user, role, objectives, untagged, tagged, seen, created = fields[
            :10
        ]
        partition, offset = fields[10:12] if head >= 3 else (-1, -1)
        if head >= 4:
            legacy = fields[12]
        else:  # the old window of 48-bit fingerprints
            seen, legacy = "", seen
        if role not in ("learner", "instructor"):
            raise ValueError(f"not a registration state (role {role!r})")
        from_json = ObjectiveState.from_json
        return cls(
            reg,
            li,
            user,
            role,
            {k: from_json(v) for k, v in objectives.items()},
            untagged,
            tagged,
            seen,
            created,
            partition,
            offset,
            legacy,
            fields[13] if head >= _NAMED_FORMAT else None,
            {
                goal: tuple(
                    (int(t), int(status), float(progress), int(remaining))
                    for t, status, progress, remaining in points
                )
                for goal, points in fields[14].items()
            }
            if head == _HISTORY_FORMAT
            else {},
        )

    @property
    def attempts_remembered(self) -> int:
        """Applied attempt ids remembered since format 4 (all of them)."""
        return len(self.seen) // _FP


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """Outcome of :func:`apply_attempt`; ``state`` is unchanged unless applied."""

    state: RegistrationState | None
    outcome: Literal["applied", "duplicate", "rejected"]
    reason: str | None = None


def register(
    state: RegistrationState | None, event: RegistrationCreated, catalog: Catalog
) -> AttemptResult:
    """Create the state; the first creation of a registration id keeps it.

    A repeat with the same learning instance, user and role is a duplicate,
    unless it carries another ``display_name``: then it renames the
    registration (without one, it removes the name).

    A registration belongs to its learning instance's partner, so it needs a
    learning instance the catalog knows. Creating it again identically is a
    duplicate; creating it again in another learning instance, for another
    user or with another role is rejected (docs/auth.md, "Ownership").
    """
    li_id = event.learning_instance_id
    if catalog.learning_instance(li_id) is None:
        return _reject(state, f"unknown learning instance {li_id!r}")
    if state is None or state.registration_id != event.registration_id:
        new = RegistrationState(
            event.registration_id,
            li_id,
            event.user_id,
            event.role,
            created_us=epoch_us(event.occurred_at),
            display_name=event.display_name,
        )
        return AttemptResult(new, "applied")
    if (state.learning_instance_id, state.user_id, state.role) == (
        li_id,
        event.user_id,
        event.role,
    ):
        if state.display_name != event.display_name:
            # The partner renamed the registration (or removed its name).
            renamed = replace(state, display_name=event.display_name)
            return AttemptResult(renamed, "applied")
        return AttemptResult(state, "duplicate")
    return _reject(
        state,
        f"registration_id {event.registration_id!r} already exists with another "
        "learning instance, user or role (the first creation keeps it)",
    )


def is_redelivery(state: RegistrationState | None, partition: int, offset: int) -> bool:
    """Is the record at (partition, offset) one the state already folded in?"""
    return (
        state is not None
        and state.source_partition == partition
        and offset <= state.source_offset
    )


def with_history(
    state: RegistrationState, goal_id: str, points: tuple[Point, ...]
) -> RegistrationState:
    """The state with ``points`` as the goal's timeline."""
    return replace(state, history={**state.history, goal_id: points})


def with_history_of(
    state: RegistrationState, history: Mapping[str, tuple[Point, ...]]
) -> RegistrationState:
    """The state with ``history`` as all its timelines."""
    return replace(state, history=history)


def with_position(
    state: RegistrationState, partition: int, offset: int
) -> RegistrationState:
    """The state, remembering (partition, offset) as the last record folded in.

    A position never moves back on its partition: an earlier record (a
    redelivery) leaves the state as it is.
    """
    if state.source_partition == partition and offset <= state.source_offset:
        return state
    return replace(state, source_partition=partition, source_offset=offset)


def epoch_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact integer maths)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _fingerprint(attempt_id: str, size: int = _FP) -> str:
    digest = hashlib.blake2b(attempt_id.encode(), digest_size=size * 3 // 4).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def _remembers(seen: str, fingerprint: str) -> bool:
    width = len(fingerprint)
    at = seen.find(fingerprint)
    while at >= 0:
        if at % width == 0:
            return True
        at = seen.find(fingerprint, at + 1)
    return False


def _applied_before(
    state: RegistrationState, attempt_id: str, fingerprint: str
) -> bool:
    if _remembers(state.seen, fingerprint):
        return True
    return bool(state.legacy_seen) and _remembers(
        state.legacy_seen, _fingerprint(attempt_id, _LEGACY_FP)
    )


def _reject(state: RegistrationState | None, reason: str) -> AttemptResult:
    return AttemptResult(state, "rejected", reason)


def apply_attempt(
    state: RegistrationState | None, attempt: AttemptGraded, catalog: PartnerCatalog
) -> AttemptResult:
    """Fold one graded attempt: BKT update of each objective of its module."""
    if state is None:
        return _reject(None, f"unknown registration {attempt.registration_id!r}")
    if state.registration_id != attempt.registration_id:
        return _reject(
            state,
            f"attempt is for registration {attempt.registration_id!r}, "
            f"not {state.registration_id!r}",
        )
    fingerprint = _fingerprint(attempt.attempt_id)
    if _applied_before(state, attempt.attempt_id, fingerprint):
        return AttemptResult(state, "duplicate")
    if state.role != "learner":
        return _reject(
            state, f"registration {state.registration_id!r} is an instructor"
        )
    if len(state.seen) >= ATTEMPTS_MAX * _FP:
        return _reject(
            state,
            f"registration {state.registration_id!r} has {ATTEMPTS_MAX} attempts, "
            "the most one registration keeps",
        )
    module = catalog.module(attempt.module_id)
    if module is None:
        return _reject(state, f"unknown module {attempt.module_id!r} (not tagged)")
    goal_id = attempt.goal_id
    if goal_id is not None:
        goal = catalog.goal(goal_id)
        if goal is None:
            return _reject(state, f"unknown goal {goal_id!r}")
        if goal.learning_instance_id != state.learning_instance_id:
            return _reject(
                state,
                f"goal {goal_id!r} belongs to learning instance "
                f"{goal.learning_instance_id!r}, not {state.learning_instance_id!r}",
            )

    correct = attempt.is_correct
    objectives = dict(state.objectives)
    for objective in module.learning_objective_ids:
        params = catalog.params_for(objective)
        current = objectives.get(objective)
        objectives[objective] = apply(
            initial(params) if current is None else current, params, correct
        )
    module_id = attempt.module_id
    untagged = state.untagged_work
    tagged = state.tagged_work
    if goal_id is None:
        untagged = dict(untagged)
        untagged[module_id] = untagged.get(module_id, 0) + 1
    else:
        per_module = dict(tagged.get(goal_id, {}))
        per_module[module_id] = per_module.get(module_id, 0) + 1
        tagged = dict(tagged)
        tagged[goal_id] = per_module
    new = RegistrationState(
        state.registration_id,
        state.learning_instance_id,
        state.user_id,
        state.role,
        objectives,
        untagged,
        tagged,
        state.seen + fingerprint,
        state.created_us,
        state.source_partition,
        state.source_offset,
        state.legacy_seen,
        state.display_name,
        state.history,
    )
    return AttemptResult(new, "applied")
