"""Graded attempts from any front door (JSON, xAPI, Caliper) into Kafka.

Every front door maps its items to :class:`schemas.ingest.BatchGradedEvent` or
an :class:`Unmappable` reason; :class:`AttemptIngest` then checks them against
the read model (the registration exists, belongs to the caller's partner and
is a learner's; the goal, if any, is of the registration's learning instance),
produces the accepted ones as ``AttemptGraded`` events and waits for the
broker's acks. One bad item never sinks its batch: it gets its own result.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from api.errors import BrokerUnavailable
from api.facts import FactStore
from api.sink import EventSink
from api.tokens import Principal
from schemas.events import AttemptGraded, EntityId
from schemas.ingest import BatchGradedEvent, BatchResult, EventResult

__all__ = [
    "AttemptIngest",
    "Unmappable",
    "attempt_id_from",
    "validation_reason",
]

_ENTITY_ID: TypeAdapter[str] = TypeAdapter(EntityId)
_ID_NAMESPACE = uuid.UUID("3b0f5e38-2c2a-4c39-9a55-6f3d5bb0b7a1")


@dataclass(frozen=True, slots=True)
class Unmappable:
    """Why an item was rejected: a stable ``code`` and a readable ``reason``."""

    code: str
    reason: str


def validation_reason(
    exc: ValidationError, sources: dict[str, str] | None = None
) -> str:
    """One line naming every bad field (by its source path, when given)."""
    parts = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "event"
        if sources and field in sources:
            field = f"{field} (from {sources[field]})"
        parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)


def attempt_id_from(source_id: object) -> str | None:
    """An attempt id from a source's own id, deterministically.

    Ids that are valid entity ids are kept; others (``urn:uuid:…``, IRIs) are
    reduced to their UUID or hashed (UUIDv5), so a re-sent statement or event
    always maps to the same attempt id.
    """
    if not isinstance(source_id, str) or not source_id:
        return None
    text = source_id.removeprefix("urn:uuid:")
    try:
        return _ENTITY_ID.validate_python(text)
    except ValidationError:
        return str(uuid.uuid5(_ID_NAMESPACE, source_id))


def _rejected(index: int, item: Unmappable, reg_id: str | None = None) -> EventResult:
    return EventResult(
        index=index,
        status="rejected",
        code=item.code,
        reason=item.reason,
        registration_id=reg_id,
    )


class AttemptIngest:
    """Checks items against the read model and produces the accepted ones."""

    def __init__(self, facts: FactStore, sink: EventSink) -> None:
        self.facts = facts
        self.sink = sink

    async def check(
        self, principal: Principal, items: Sequence[BatchGradedEvent]
    ) -> list[Unmappable | None]:
        """``None`` for each item that may be produced, else why not."""
        regs = await self.facts.registrations([i.registration_id for i in items])
        goal_ids = [i.goal_id for i in items if i.goal_id is not None]
        goals = await self.facts.goals(goal_ids) if goal_ids else {}
        verdicts: list[Unmappable | None] = []
        for item in items:
            reg = regs.get(item.registration_id)
            owned = reg is not None and (
                principal.unrestricted or reg.partner_id == principal.partner_id
            )
            if reg is None or not owned:
                # Same answer for "never existed" and "another partner's".
                verdicts.append(
                    Unmappable(
                        "registration_not_found",
                        f"registration {item.registration_id!r} not found (a "
                        f"registration created moments ago is visible once the "
                        f"worker has projected it; retry)",
                    )
                )
                continue
            if reg.role != "learner":
                verdicts.append(
                    Unmappable(
                        "registration_not_a_learner",
                        f"registration {item.registration_id!r} is an "
                        f"instructor's; only learners make attempts",
                    )
                )
                continue
            goal = goals.get(item.goal_id) if item.goal_id is not None else None
            if item.goal_id is not None and (
                goal is None or goal.learning_instance_id != reg.learning_instance_id
            ):
                verdicts.append(
                    Unmappable(
                        "goal_not_found",
                        f"goal {item.goal_id!r} not found in the registration's "
                        f"learning instance",
                    )
                )
                continue
            verdicts.append(None)
        return verdicts

    async def ingest(
        self,
        principal: Principal,
        items: Sequence[BatchGradedEvent | Unmappable],
        *,
        regs_of_rejected: Sequence[str | None] | None = None,
    ) -> BatchResult:
        """Check, produce and report; raises BrokerUnavailable (503) if the
        broker did not acknowledge every accepted event."""
        valid = [
            (i, it) for i, it in enumerate(items) if not isinstance(it, Unmappable)
        ]
        verdicts = await self.check(principal, [it for _, it in valid])
        results: list[EventResult | None] = [None] * len(items)
        for i, it in enumerate(items):
            if isinstance(it, Unmappable):
                reg = regs_of_rejected[i] if regs_of_rejected else None
                results[i] = _rejected(i, it, reg)
        now = datetime.now(UTC)
        events: list[AttemptGraded] = []
        positions: list[int] = []
        for (i, item), verdict in zip(valid, verdicts, strict=True):
            if verdict is not None:
                results[i] = _rejected(i, verdict, item.registration_id)
                continue
            event = AttemptGraded(
                event_id=str(uuid.uuid4()),
                occurred_at=now,
                attempt_id=item.attempt_id or str(uuid.uuid4()),
                registration_id=item.registration_id,
                module_id=item.module_id,
                is_correct=item.is_correct,
                interaction_end_time=item.interaction_end_time,
                goal_id=item.goal_id,
            )
            events.append(event)
            positions.append(i)
            results[i] = EventResult(
                index=i,
                status="accepted",
                event_id=event.event_id,
                attempt_id=event.attempt_id,
                registration_id=event.registration_id,
            )
        try:
            await self.sink.send(events)
        except BrokerUnavailable as exc:
            # Report stored events by their index in the *request*.
            details: dict[str, Any] = dict(exc.details or {})
            details["stored"] = [positions[k] for k in details.get("stored", [])]
            exc.details = details
            raise
        final = [r for r in results if r is not None]
        accepted = sum(r.status == "accepted" for r in final)
        return BatchResult(
            accepted=accepted, rejected=len(final) - accepted, results=final
        )
