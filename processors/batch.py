"""The worker's batch fold: records + states + catalog -> a plan of effects.

Pure: no I/O, no Faust. The worker decodes a batch of registration-topic
records (:func:`decode`), looks up the states of their registrations, makes
sure its catalog knows every learning instance, module and goal they name
(:func:`needs_catalog`) and calls :func:`fold`, then executes the returned
:class:`BatchPlan`: dead letters, state writes, rows, registration facts.

Rules (each tested in tests/unit/test_batch.py):

- A record at or before the position its registration's state has folded in
  is a *redelivery* (after a crash or rebalance): not applied again, but its
  state is written and its rows projected again, since the local store may
  hold its effect while the changelog and Redis do not.
- An attempt whose id the state remembers is a *duplicate* (re-sent as a new
  record): not applied, written and projected again likewise.
- Anything that cannot be applied is *rejected* with a reason: undecodable or
  invalid records, events that do not belong on the topic, a key that is not
  the registration id, unknown registrations, learning instances, modules or
  goals, instructors' attempts, and a second creation of a registration id
  that differs from the first (the first keeps it). Modules and goals are
  looked up as the registration's partner sees the catalog, so another
  partner's ids are unknown here. A rejected record of a known registration
  still advances its position, so a redelivered rejection is not
  dead-lettered twice.
- Every changed state carries the position of the last record folded in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from processors.catalog import Catalog, PartnerCatalog
from processors.forecast import TableKey
from processors.forecaster import SYNCHRONOUS, Forecaster
from processors.goals import evaluate
from processors.history import (
    DEFAULT_HISTORY,
    HistoryPolicy,
    Point,
    appended,
    due,
    point_of,
    points_json,
)
from processors.partitioning import kafka_partition
from processors.registration import (
    AttemptResult,
    RegistrationState,
    apply_attempt,
    epoch_us,
    is_redelivery,
    register,
    with_history,
    with_history_of,
    with_position,
)
from processors.rows import Touched, derive_rows
from processors.transitions import Transitions
from schemas.event_codec import decode_fast
from schemas.events import AttemptGraded, Event, GoalDefined, RegistrationCreated
from schemas.transitions import StatusChanged

__all__ = [
    "BatchPlan",
    "Decoded",
    "Outcome",
    "Record",
    "Rejection",
    "decode",
    "fold",
    "needs_catalog",
    "registration_ids",
    "rejection_reason",
    "split_misplaced",
]

Outcome = Literal["applied", "duplicate", "redelivered", "rejected", "forwarded"]
RegistrationEvent = RegistrationCreated | AttemptGraded


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record: where it is in the log and its bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Decoded:
    record: Record
    event: RegistrationEvent


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record to dead-letter, and why."""

    record: Record
    reason: str


@dataclass(slots=True)
class BatchPlan:
    """What one batch changes. ``states`` hold their new positions."""

    states: dict[str, RegistrationState] = field(default_factory=dict)
    rows: list[tuple[str, str, bytes]] = field(default_factory=list)
    registrations: list[RegistrationState] = field(default_factory=list)
    dead: list[Rejection] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    #: Registrations whose rows were derived without these exact forecast
    #: tables (provisional): build them, then derive those rows again.
    provisional: dict[str, frozenset[TableKey]] = field(default_factory=dict)
    #: Status changes, event by event, in log order per registration
    #: (processors/transitions.py).
    transitions: list[StatusChanged] = field(default_factory=list)
    #: (registration, goal, timeline JSON) of the timelines to write: those
    #: that changed, and all of a registration whose rows are written again.
    history: list[tuple[str, str, bytes]] = field(default_factory=list)
    #: Records the domain code raised on (dead-lettered as "internal error").
    internal_errors: int = 0


def rejection_reason(exc: Exception) -> str:
    """A dead letter's reason for an invalid record."""
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()[:5]
        ]
        return "invalid event: " + "; ".join(parts)
    return f"invalid event: {exc}"


def decode(
    records: Iterable[Record], decoder: Callable[[bytes], Event] = decode_fast
) -> tuple[list[Decoded], list[Rejection]]:
    """Validate records of the registration-events topic.

    ``decoder`` is pydantic's ``decode_event`` behind a proven-equal fast path
    for attempts (schemas/event_codec.py); the benchmark passes
    ``decode_event`` itself to measure the difference."""
    decoded: list[Decoded] = []
    rejected: list[Rejection] = []
    for record in records:
        try:
            event = decoder(record.value or b"")
            if not isinstance(event, RegistrationCreated | AttemptGraded):
                raise ValueError(f"{event.type} does not belong on this topic")
            if record.key is None:
                raise ValueError(
                    "record has no key (records are keyed by registration_id)"
                )
            if record.key != event.registration_id.encode():
                raise ValueError("record key differs from registration_id")
        except (ValidationError, ValueError) as exc:
            rejected.append(Rejection(record, rejection_reason(exc)))
            continue
        decoded.append(Decoded(record, event))
    return decoded, rejected


def split_misplaced(
    records: Iterable[Record], partitions: int
) -> tuple[list[Record], list[tuple[Record, int]]]:
    """Records on the partition their key hashes to, and the others with the
    partition they belong on (to be forwarded there; keyless records stay, to
    be rejected by :func:`decode`)."""
    placed: list[Record] = []
    misplaced: list[tuple[Record, int]] = []
    for record in records:
        if record.key is not None:
            home = kafka_partition(record.key, partitions)
            if home != record.partition:
                misplaced.append((record, home))
                continue
        placed.append(record)
    return placed, misplaced


def registration_ids(decoded: Iterable[Decoded]) -> dict[str, int]:
    """Registration id -> partition of its records, in order of appearance."""
    return {d.event.registration_id: d.record.partition for d in decoded}


def needs_catalog(
    decoded: Iterable[Decoded],
    states: Mapping[str, RegistrationState | None],
    catalog: Catalog,
) -> bool:
    """Does a record name a learning instance, module or goal the catalog does
    not know yet (as its registration's partner sees it)?"""
    li_of = {
        reg_id: state.learning_instance_id
        for reg_id, state in states.items()
        if state is not None
    }
    for d in decoded:
        event = d.event
        if isinstance(event, RegistrationCreated):
            li_of.setdefault(event.registration_id, event.learning_instance_id)
            if catalog.learning_instance(event.learning_instance_id) is None:
                return True
            continue
        li_id = li_of.get(event.registration_id)
        if li_id is None:
            continue  # an unknown registration: no catalog makes it known
        view = catalog.for_learning_instance(li_id)
        if view.module(event.module_id) is None or (
            event.goal_id is not None and view.goal(event.goal_id) is None
        ):
            return True
    return False


def fold(
    decoded: Sequence[Decoded],
    states: Mapping[str, RegistrationState | None],
    catalog: Catalog,
    *,
    forecaster: Forecaster = SYNCHRONOUS,
    history: HistoryPolicy | None = DEFAULT_HISTORY,
    exact: Forecaster = SYNCHRONOUS,
) -> BatchPlan:
    """Fold a decoded batch into the states of its registrations.

    ``states`` must hold an entry (``None`` when unknown) for every
    registration of the batch. Decode rejections are not repeated here: the
    caller adds them to the plan's dead letters (:func:`decode`).

    ``history``: when the learners' timelines get points (None: never);
    ``exact``: the forecaster of those points, which must not be provisional
    (processors/history.py).
    """
    plan = BatchPlan()
    forecaster.start_batch()
    current: dict[str, RegistrationState | None] = {}
    last: dict[str, Record] = {}  # the record whose position each state takes
    registered: set[str] = set()
    redelivered: set[str] = set()
    touched: dict[str, Touched] = {}
    transitions = Transitions(catalog, first_from_history=history is not None)
    outcomes = plan.outcomes
    for d in decoded:
        record, event = d.record, d.event
        reg_id = event.registration_id
        state = current[reg_id] if reg_id in current else states[reg_id]
        # A registration's attempts and goals are read as its learning
        # instance's partner sees the catalog (processors/catalog.py).
        view = catalog.for_partner(
            None if state is None else catalog.partner_of(state.learning_instance_id)
        )
        if is_redelivery(state, record.partition, record.offset):
            outcomes["redelivered"] += 1
            redelivered.add(reg_id)
            last[reg_id] = record
            if isinstance(event, RegistrationCreated):
                registered.add(reg_id)
            else:
                touched.setdefault(reg_id, Touched()).add(
                    event.module_id, event.goal_id, view
                )
            current[reg_id] = state
            continue
        try:
            if isinstance(event, RegistrationCreated):
                result = register(state, event, catalog)
            else:
                result = apply_attempt(state, event, view)
        except Exception as exc:  # a bug must not sink the batch or the event
            # (app/worker/failures.py: past a threshold the worker crashes instead)
            result = AttemptResult(state, "rejected", f"internal error: {exc!r}")
            plan.internal_errors += 1
        outcomes[result.outcome] += 1
        new_state = result.state
        if result.outcome == "rejected":
            plan.dead.append(Rejection(record, result.reason or "rejected"))
        elif isinstance(event, RegistrationCreated):
            registered.add(reg_id)
            if state is None and new_state is not None:
                goals = transitions.registered(
                    new_state,
                    event,
                    catalog,
                    partition=record.partition,
                    offset=record.offset,
                )
                if history is not None and goals:
                    new_state = _first_points(
                        new_state, goals, epoch_us(event.occurred_at), catalog, exact
                    )
        else:
            touched.setdefault(reg_id, Touched()).add(
                event.module_id, event.goal_id, view
            )
            if result.outcome == "applied" and state is not None and new_state:
                affected = transitions.attempted(
                    state,
                    new_state,
                    event,
                    view,
                    partition=record.partition,
                    offset=record.offset,
                )
                if history is not None and affected:
                    new_state = _add_points(
                        new_state,
                        affected,
                        epoch_us(event.occurred_at),
                        view,
                        policy=history,
                        exact=exact,
                    )
        current[reg_id] = new_state
        if new_state is not None:
            last[reg_id] = record
    for reg_id, record in last.items():
        folded = current[reg_id]
        assert folded is not None  # a position is only taken by a known state
        state = with_position(folded, record.partition, record.offset)
        plan.states[reg_id] = state
        forecaster.serve(catalog.share_owner(state.learning_instance_id))
        if reg_id in registered:  # every goal: a new learner gets its rows
            rows = derive_rows(state, catalog, forecaster=forecaster)
        elif reg_id in touched:
            rows = derive_rows(state, catalog, touched[reg_id], forecaster=forecaster)
        else:
            rows = []
        plan.rows.extend((reg_id, goal_id, row) for goal_id, row in rows)
        before = states[reg_id]
        old = {} if before is None else before.history
        again = reg_id in redelivered or reg_id in registered
        if again or state.history is not old:
            plan.history.extend(
                (reg_id, goal_id, points_json(points))
                for goal_id, points in state.history.items()
                if again or old.get(goal_id) is not points
            )
        if pending := forecaster.take_pending():
            plan.provisional[reg_id] = pending
    plan.registrations.extend(
        s for reg_id in registered if (s := plan.states.get(reg_id)) is not None
    )
    plan.transitions = transitions.changes
    return plan


def _add_points(
    state: RegistrationState,
    goals: Sequence[tuple[GoalDefined, bool]],
    at_us: int,
    view: PartnerCatalog,
    *,
    policy: HistoryPolicy,
    exact: Forecaster,
) -> RegistrationState:
    """The state with a point on each goal where one is due (``goals``: the
    goals the event can change, with whether their status changed)."""
    for goal, changed in goals:
        points = state.history.get(goal.goal_id, ())
        if due(points, at_us, changed, policy):
            row = evaluate(goal, state, view, forecaster=exact, summary=True)
            state = with_history(
                state,
                goal.goal_id,
                appended(points, point_of(row, at_us), policy.max_points),
            )
    return state


def _first_points(
    state: RegistrationState,
    goals: Sequence[GoalDefined],
    at_us: int,
    catalog: Catalog,
    exact: Forecaster,
) -> RegistrationState:
    """A new learner's first point on each goal: the goal's template row (a
    learner without attempts), evaluated once per state of the catalog."""
    view = catalog.for_learning_instance(state.learning_instance_id)
    firsts: dict[str, Point] = catalog.memo("history.first")
    history = dict(state.history)
    for goal in goals:
        first = firsts.get(goal.goal_id)
        if first is None:
            first = firsts[goal.goal_id] = point_of(
                evaluate(goal, None, view, forecaster=exact, summary=True), 0
            )
        history[goal.goal_id] = ((at_us, *first[1:]),)
    return with_history_of(state, history)
