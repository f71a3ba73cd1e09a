"""Ingest and admin endpoints: requests become events on Kafka (docs/ingest.md).

The API never writes state: each endpoint checks the caller against the read
model, builds events of :mod:`schemas.events` (server-side ``event_id`` and
``occurred_at``), and answers only after the broker acknowledged them.

- admin (``partner_admin``): ``POST /learning-instances``, ``POST
  /registrations``, ``PUT /goals/{goal_id}``, ``PUT /modules/{module_id}``
- ingest (``partner_admin`` or ``ingest``): ``POST
  /registrations/{reg_id}/graded-events``, ``POST /batch-events``, ``POST
  /xapi/statements``, ``POST /caliper/events``
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api._http import (
    json_response,
    path_entity_id,
    path_ref_id,
    read_json,
    validate,
    validation_details,
)
from api.attempts import AttemptIngest, Unmappable, validation_reason
from api.auth import Authenticator, authorize_partner, require_role
from api.caliper import CALIPER_DATA_VERSION, attempt_from_event
from api.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    not_found,
)
from api.facts import FactStore
from api.shares import PartnerShare
from api.sink import EventSink
from api.tokens import Principal
from api.xapi import attempt_from_statement
from schemas.events import (
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    RegistrationCreated,
)
from schemas.ingest import (
    MAX_BATCH_EVENTS,
    Accepted,
    BatchGradedEvent,
    BatchResult,
    CreateLearningInstance,
    CreateRegistration,
    DefineGoal,
    GradedEvent,
    TagModule,
)

__all__ = ["IngestRoutes"]

ADMIN = ("partner_admin",)
INGEST = ("partner_admin", "ingest")


def _accepted(body: Accepted) -> Response:
    return json_response(body.model_dump_json(exclude_none=True).encode(), 202)


def _multi_status(result: BatchResult) -> Response:
    return json_response(result.model_dump_json(exclude_none=True).encode(), 207)


def _too_many(count: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"at most {MAX_BATCH_EVENTS} events per request, got {count}; split the batch",
        details={"limit": MAX_BATCH_EVENTS, "count": count},
        code="too_many_events",
    )


def _event_base() -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC)}


E = TypeVar(
    "E", LearningInstanceCreated, RegistrationCreated, GoalDefined, ModuleTagged
)


def _build(factory: type[E], **fields: Any) -> E:
    try:
        return factory(**_event_base(), **fields)
    except ValidationError as exc:
        errors = validation_details(exc)
        fields_ = ", ".join(sorted({e["field"] for e in errors}))
        raise BadRequest(f"invalid request body: {fields_}", details=errors) from exc


#: request-state key of the partner-share release (api/shares.py)
_RELEASE = "ingest_share_release"


class IngestRoutes:
    """The routes of the ingest and admin endpoints over their ports."""

    def __init__(
        self,
        authenticator: Authenticator,
        facts: FactStore | None,
        sink: EventSink | None,
        *,
        max_request_bytes: int,
        correct_min_score: float,
        max_inflight_per_partner: int = 64,
    ) -> None:
        self.authn = authenticator
        self.facts = facts
        self.sink = sink
        self.limit = max_request_bytes
        self.min_score = correct_min_score
        self.share = PartnerShare(max_inflight_per_partner, "ingest requests")

    def _ports(self) -> tuple[FactStore, EventSink, AttemptIngest]:
        if self.facts is None or self.sink is None:
            raise ServiceUnavailable(
                "ingest is not configured on this API (no broker)",
                code="ingest_unavailable",
            )
        return self.facts, self.sink, AttemptIngest(self.facts, self.sink)

    def _caller(self, request: Request, roles: Sequence[str]) -> Principal:
        principal = self.authn.authenticate(request)
        require_role(principal, *roles)
        # Released when the route returns (_guarded).
        request.scope.setdefault("state", {})[_RELEASE] = self.share.acquire(
            principal.partner_id
        )
        return principal

    @staticmethod
    def _guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            finally:
                release = request.scope.get("state", {}).pop(_RELEASE, None)
                if release is not None:
                    release()

        return run

    async def create_learning_instance(self, request: Request) -> Response:
        principal = self._caller(request, ADMIN)
        body = validate(CreateLearningInstance, await read_json(request, self.limit))
        facts, sink, _ = self._ports()
        li_id = body.learning_instance_id or str(uuid.uuid4())
        if body.learning_instance_id is not None:
            owner = await facts.learning_instance_partner(li_id)
            if owner is not None and owner != principal.partner_id:
                raise Conflict(
                    f"learning_instance_id {li_id!r} is already in use; choose "
                    f"another or let the server choose",
                    details={"field": "learning_instance_id"},
                    code="id_in_use",
                )
        event = _build(
            LearningInstanceCreated,
            learning_instance_id=li_id,
            partner_id=principal.partner_id,
            title=body.title,
        )
        await sink.send([event])
        return _accepted(
            Accepted(
                event_id=event.event_id,
                learning_instance_id=li_id,
                partner_id=principal.partner_id,
            )
        )

    async def create_registration(self, request: Request) -> Response:
        principal = self._caller(request, ADMIN)
        body = validate(CreateRegistration, await read_json(request, self.limit))
        facts, sink, _ = self._ports()
        li_id = body.learning_instance_id
        owner = await facts.learning_instance_partner(li_id)
        if owner is None and principal.unrestricted:
            owner = principal.partner_id
        authorize_partner(principal, owner, "learning_instance_id", li_id)
        reg_id = body.registration_id or str(uuid.uuid4())
        if body.registration_id is not None:
            existing = (await facts.registrations([reg_id])).get(reg_id)
            if existing is not None and (
                existing.learning_instance_id,
                existing.user_id,
                existing.role,
            ) != (li_id, body.user_id, body.role):
                raise Conflict(
                    f"registration_id {reg_id!r} is already in use; a registration "
                    f"cannot be changed",
                    details={"field": "registration_id"},
                    code="id_in_use",
                )
        event = _build(
            RegistrationCreated,
            registration_id=reg_id,
            learning_instance_id=li_id,
            user_id=body.user_id,
            role=body.role,
            display_name=body.display_name,
        )
        await sink.send([event])
        return _accepted(
            Accepted(
                event_id=event.event_id,
                registration_id=reg_id,
                learning_instance_id=li_id,
            )
        )

    async def define_goal(self, request: Request) -> Response:
        principal = self._caller(request, ADMIN)
        goal_id = path_entity_id(request, "goal_id")
        body = validate(DefineGoal, await read_json(request, self.limit))
        facts, sink, _ = self._ports()
        li_id = body.learning_instance_id
        owner = await facts.learning_instance_partner(li_id)
        if owner is None and principal.unrestricted:
            owner = principal.partner_id
        authorize_partner(principal, owner, "learning_instance_id", li_id)
        existing = (await facts.goals([goal_id])).get(goal_id)
        if (
            existing is not None
            and not principal.unrestricted
            and existing.partner_id != principal.partner_id
        ):
            raise Conflict(
                f"goal_id {goal_id!r} is already in use",
                details={"field": "goal_id"},
                code="id_in_use",
            )
        event = _build(
            GoalDefined,
            goal_id=goal_id,
            learning_instance_id=li_id,
            targets=body.targets,
            topics=body.topics,
            completion_criteria=body.completion_criteria,
            title=body.title,
        )
        await sink.send([event])
        return _accepted(
            Accepted(
                event_id=event.event_id, goal_id=goal_id, learning_instance_id=li_id
            )
        )

    async def tag_module(self, request: Request) -> Response:
        principal = self._caller(request, ADMIN)
        module_id = path_ref_id(request, "module_id")
        body = validate(TagModule, await read_json(request, self.limit))
        _, sink, _ = self._ports()
        # Modules and objectives are the partner's own (docs/auth.md,
        # "Ownership"): this tags the caller's module, never another's.
        event = _build(
            ModuleTagged,
            partner_id=principal.partner_id,
            module_id=module_id,
            learning_objective_ids=body.learning_objective_ids,
            parameters=body.parameters,
            module_name=body.module_name,
            objective_names=body.objective_names,
        )
        await sink.send([event])
        return _accepted(Accepted(event_id=event.event_id, module_id=module_id))

    async def graded_event(self, request: Request) -> Response:
        principal = self._caller(request, INGEST)
        reg_id = path_entity_id(request, "reg_id")
        body = validate(GradedEvent, await read_json(request, self.limit))
        _, _, attempts = self._ports()
        item = BatchGradedEvent(registration_id=reg_id, **body.model_dump())
        result = (await attempts.ingest(principal, [item])).results[0]
        if result.status == "rejected":
            if result.code == "registration_not_found":
                raise not_found("reg_id", reg_id)
            if result.code == "goal_not_found":
                raise NotFound(
                    result.reason or "goal not found",
                    details={"field": "goal_id"},
                    code="goal_not_found",
                )
            raise Conflict(result.reason or "rejected", code=result.code)
        assert result.event_id is not None
        return _accepted(
            Accepted(
                event_id=result.event_id,
                registration_id=reg_id,
                attempt_id=result.attempt_id,
            )
        )

    async def batch_events(self, request: Request) -> Response:
        principal = self._caller(request, INGEST)
        raw = await read_json(request, self.limit)
        if not isinstance(raw, dict) or set(raw) != {"events"}:
            raise BadRequest(
                'the body is {"events": [...]}', details={"field": "events"}
            )
        events = raw["events"]
        if not isinstance(events, list):
            raise BadRequest("events must be an array", details={"field": "events"})
        if len(events) > MAX_BATCH_EVENTS:
            raise _too_many(len(events))
        _, _, attempts = self._ports()
        items: list[BatchGradedEvent | Unmappable] = []
        for event in events:
            try:
                items.append(BatchGradedEvent.model_validate(event))
            except ValidationError as exc:
                items.append(Unmappable("invalid", validation_reason(exc)))
        regs = [_registration_of(e) for e in events]
        result = await attempts.ingest(principal, items, regs_of_rejected=regs)
        return _multi_status(result)

    async def xapi_statements(self, request: Request) -> Response:
        principal = self._caller(request, INGEST)
        raw = await read_json(request, self.limit)
        statements = raw if isinstance(raw, list) else [raw]
        if len(statements) > MAX_BATCH_EVENTS:
            raise _too_many(len(statements))
        _, _, attempts = self._ports()
        now = datetime.now(UTC)
        items = [
            attempt_from_statement(s, min_score=self.min_score, now=now)
            for s in statements
        ]
        return _multi_status(await attempts.ingest(principal, items))

    async def caliper_events(self, request: Request) -> Response:
        principal = self._caller(request, INGEST)
        raw = await read_json(request, self.limit)
        if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
            raise BadRequest(
                "the body is a Caliper envelope {sensor, sendTime, dataVersion, data}",
                details={"field": "data"},
            )
        if raw.get("dataVersion") != CALIPER_DATA_VERSION:
            raise BadRequest(
                f"dataVersion must be {CALIPER_DATA_VERSION!r}",
                details={"field": "dataVersion"},
            )
        data: list[Any] = raw["data"]
        if len(data) > MAX_BATCH_EVENTS:
            raise _too_many(len(data))
        _, _, attempts = self._ports()
        items = [attempt_from_event(e, min_score=self.min_score) for e in data]
        return _multi_status(await attempts.ingest(principal, items))

    def routes(self) -> list[Route]:
        guarded = self._guarded
        return [
            Route(
                "/learning-instances",
                guarded(self.create_learning_instance),
                methods=["POST"],
            ),
            Route(
                "/registrations", guarded(self.create_registration), methods=["POST"]
            ),
            Route("/goals/{goal_id}", guarded(self.define_goal), methods=["PUT"]),
            Route(
                "/modules/{module_id:path}", guarded(self.tag_module), methods=["PUT"]
            ),
            Route(
                "/registrations/{reg_id}/graded-events",
                guarded(self.graded_event),
                methods=["POST"],
            ),
            Route("/batch-events", guarded(self.batch_events), methods=["POST"]),
            Route("/xapi/statements", guarded(self.xapi_statements), methods=["POST"]),
            Route("/caliper/events", guarded(self.caliper_events), methods=["POST"]),
        ]


def _registration_of(event: object) -> str | None:
    value = event.get("registration_id") if isinstance(event, dict) else None
    return value if isinstance(value, str) else None
