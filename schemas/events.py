"""Versioned domain events carried on Kafka.

Every event is a frozen pydantic model with ``event_id``, ``occurred_at``, a
``type`` discriminator and a ``schema_version``. Events are serialized as JSON
(one object per Kafka record); :func:`decode_event` is the single way to turn
record bytes back into a model.

Versions (docs/events.md, "Versions", keeps the changelog): a change that a
producer written against the previous docs/events.md would break on (a new
required field, a removed or renamed field, a narrower meaning) bumps the
event's ``schema_version``. :func:`decode_event` upcasts an older version to
the current one where its meaning is clear, and otherwise refuses it with a
reason that names the version and the missing field (the worker
dead-letters it). tests/unit/test_event_versions.py decodes a stored sample
of every past version.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal, TypeAlias

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import AfterValidator
from pydantic_core import PydanticCustomError

from schemas.bkt_params import FORGET, GUESS, LEARN, PRIOR, SLIP, forget_accepted
from schemas.limits import (
    MAX_MEMBERS_PER_TOPIC,
    MAX_OBJECTIVES_PER_MODULE,
    MAX_ROW_BYTES,
    MAX_TARGETS_PER_GOAL,
    MAX_TOPICS_PER_GOAL,
    row_bytes_bound,
)

__all__ = [
    "CONTROL_OR_FORMAT",
    "SCHEMA_VERSION",
    "AttemptGraded",
    "BKTParameters",
    "CatalogEvent",
    "CompletionCriteria",
    "DisplayName",
    "EntityId",
    "Event",
    "GoalDefined",
    "LearningInstanceCreated",
    "ModelSelection",
    "ModuleTagged",
    "ObjectiveList",
    "OldVersionRefused",
    "RefId",
    "RegistrationCreated",
    "RegistrationEvent",
    "Target",
    "TargetList",
    "Timestamp",
    "TopicMap",
    "check_topics_row_bound",
    "decode_event",
    "encode_event",
]

SCHEMA_VERSION = 1

#: Ids of entities that appear in Redis keys and URLs (learning instances,
#: registrations, goals, users, partners): UUIDs or other URL-safe tokens.
EntityId: TypeAlias = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9._~-]{1,128}$")
]
#: The code points of Unicode's general categories Cc (controls) and Cf
#: (format: zero-width space and joiners, BOM, bidi controls, tags), Unicode
#: 14, as a regex class body. Spelled out rather than ``\p{Cc}\p{Cf}`` so that
#: the Rust regex of pydantic and Python's ``re`` (the OpenAPI document's
#: consumers, schemathesis) read it alike; tests/unit/test_strict_events.py
#: checks it against ``unicodedata``.
CONTROL_OR_FORMAT = (
    r"\u0000-\u001F\u007F-\u009F\u00AD\u0600-\u0605\u061C\u06DD\u070F"
    r"\u0890-\u0891\u08E2\u180E\u200B-\u200F\u202A-\u202E\u2060-\u2064"
    r"\u2066-\u206F\uFEFF\uFFF9-\uFFFB\U000110BD\U000110CD"
    r"\U00013430-\U00013438\U0001BCA0-\U0001BCA3\U0001D173-\U0001D17A"
    r"\U000E0001\U000E0020-\U000E007F"
)
#: Ids of content (modules, learning objectives, topics): partner references
#: such as ``lref-…`` or IRIs; bounded length, no whitespace, no control
#: characters (NUL included) and no format characters (zero-width spaces and
#: joiners, BOM, bidi controls), so two ids that look alike are alike.
RefId: TypeAlias = Annotated[
    str, StringConstraints(pattern=rf"^[^\s{CONTROL_OR_FORMAT}]{{1,512}}$")
]

#: A name for people to read: a learning instance's or a goal's title, a
#: module's or an objective's name, a learner's display name as the partner
#: sets it. Metadata only: never an id, never used for access, never required
#: (docs/auth.md, "Personal data"). 1-200 characters, not only blanks, no
#: control or format characters.
DisplayName: TypeAlias = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=200,
        pattern=rf"^[^{CONTROL_OR_FORMAT}]*[^\s{CONTROL_OR_FORMAT}][^{CONTROL_OR_FORMAT}]*$",
    ),
]

# One type per BKT parameter, constrained to its range (schemas/bkt_params.py).
_Prior = Annotated[float, Field(ge=PRIOR.low, le=PRIOR.high, description=PRIOR.reason)]
_Learn = Annotated[float, Field(ge=LEARN.low, le=LEARN.high, description=LEARN.reason)]
_Guess = Annotated[float, Field(ge=GUESS.low, le=GUESS.high, description=GUESS.reason)]
_Slip = Annotated[float, Field(ge=SLIP.low, le=SLIP.high, description=SLIP.reason)]


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)


def _rfc3339_only(value: object) -> object:
    # Lax pydantic would read a number, or a string of digits, as a Unix
    # timestamp, and accepts other ISO 8601 spellings; on the wire a timestamp
    # is an RFC 3339 date-time string with an offset.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError(
            "must be an RFC 3339 date-time string with a timezone offset, "
            "e.g. 2026-09-01T08:00:03Z"
        )
    return value


#: An aware datetime that JSON must spell as an RFC 3339 string.
Timestamp: TypeAlias = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class _EventBase(_Model):
    schema_version: Literal[1] = 1
    event_id: EntityId
    occurred_at: Timestamp


class LearningInstanceCreated(_EventBase):
    """A course section (learning instance) of a partner came into being."""

    type: Literal["LearningInstanceCreated"] = "LearningInstanceCreated"
    learning_instance_id: EntityId
    partner_id: EntityId
    #: Added within schema version 1 (optional, as every name): the course
    #: section's title for the dashboard.
    title: DisplayName | None = None


class RegistrationCreated(_EventBase):
    """A user (learner or instructor) was registered in a learning instance."""

    type: Literal["RegistrationCreated"] = "RegistrationCreated"
    registration_id: EntityId
    learning_instance_id: EntityId
    user_id: EntityId
    role: Literal["learner", "instructor"]
    #: Added within schema version 1 (optional): the name the dashboard shows
    #: for this registration, as the partner sets it; the last
    #: RegistrationCreated of a registration in the log sets it (or, without
    #: one, removes it).
    display_name: DisplayName | None = None


class Target(_Model):
    """A goal target: exactly one of a learning objective or a module."""

    learning_objective_id: RefId | None = None
    module_id: RefId | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        if (self.learning_objective_id is None) == (self.module_id is None):
            raise ValueError(
                "a target has exactly one of learning_objective_id or module_id"
            )
        return self

    @property
    def kind(self) -> Literal["learning_objective", "module"]:
        return "learning_objective" if self.learning_objective_id else "module"

    @property
    def id(self) -> str:
        value = self.learning_objective_id or self.module_id
        assert value is not None  # guaranteed by _exactly_one
        return value


class CompletionCriteria(_Model):
    """When a target (and so the goal) counts as complete."""

    min_predicted_mastery: float = Field(default=0.95, gt=0.0, lt=1.0)
    min_work_per_target: int = Field(default=1, ge=0, le=1000)
    max_work_on_goal: int | None = Field(default=None, ge=1, le=100_000)


#: A goal's topics: topic id -> its members (target ids), both bounded.
TopicMap: TypeAlias = Annotated[
    dict[
        RefId,
        Annotated[list[RefId], Field(min_length=1, max_length=MAX_MEMBERS_PER_TOPIC)],
    ],
    Field(max_length=MAX_TOPICS_PER_GOAL),
]
#: A module's learning objectives, bounded.
ObjectiveList: TypeAlias = Annotated[
    list[RefId], Field(min_length=1, max_length=MAX_OBJECTIVES_PER_MODULE)
]


def _row_bound(
    targets: list[Target], topics: dict[str, list[str]] | None, field: str
) -> None:
    size = row_bytes_bound((t.id for t in targets), topics or ())
    if size > MAX_ROW_BYTES:
        raise PydanticCustomError(
            "row_too_large",
            "the goal's rows could be {size} bytes, more than the limit of "
            "{limit} bytes (schemas/limits.py): fewer or shorter " + field,
            {"size": size, "limit": MAX_ROW_BYTES},
        )


def _targets_within_row_bound(targets: list[Target]) -> list[Target]:
    _row_bound(targets, None, "targets")
    return targets


#: A goal's targets, bounded in count and, through the row they make, in bytes
#: (schemas/limits.py).
TargetList: TypeAlias = Annotated[
    list[Target],
    Field(min_length=1, max_length=MAX_TARGETS_PER_GOAL),
    AfterValidator(_targets_within_row_bound),
]


def check_topics_row_bound(
    topics: dict[str, list[str]] | None, info: ValidationInfo
) -> dict[str, list[str]] | None:
    """A ``topics`` validator: targets and topics together within the row
    bound (targets alone are checked by :data:`TargetList`)."""
    targets = info.data.get("targets")
    if topics and targets is not None:
        _row_bound(targets, topics, "targets or topics")
    return topics


class GoalDefined(_EventBase):
    """A scoped goal of a learning instance was defined or redefined."""

    type: Literal["GoalDefined"] = "GoalDefined"
    goal_id: EntityId
    learning_instance_id: EntityId
    targets: TargetList
    topics: TopicMap | None = None
    completion_criteria: CompletionCriteria = CompletionCriteria()
    #: Added within schema version 1 (optional): the goal's title.
    title: DisplayName | None = None

    _topics_within_row_bound = field_validator("topics")(check_topics_row_bound)

    @model_validator(mode="after")
    def _consistent(self) -> GoalDefined:
        kinds = {t.kind for t in self.targets}
        if len(kinds) > 1:
            raise ValueError(
                "targets of one goal are all learning objectives or all modules"
            )
        ids = [t.id for t in self.targets]
        if len(set(ids)) != len(ids):
            raise ValueError("targets must not repeat")
        known = set(ids)
        for topic_id, members in (self.topics or {}).items():
            unknown = [m for m in members if m not in known]
            if unknown:
                raise ValueError(
                    f"topic {topic_id!r} names ids that are not targets of this "
                    f"goal: {unknown}"
                )
        return self

    @property
    def target_kind(self) -> Literal["learning_objective", "module"]:
        return self.targets[0].kind


class ModelSelection(_Model):
    """How a fit chose between BKT with and without forgetting (per objective).

    Held-out log-likelihoods are per attempt, of the learners the fit held out;
    the model with the higher one is published.
    """

    criterion: Literal["held_out_log_likelihood"] = "held_out_log_likelihood"
    chosen: Literal["standard", "forgets"]
    standard: float = Field(allow_inf_nan=False, le=0.0)
    forgets: float = Field(allow_inf_nan=False, le=0.0)
    held_out_attempts: int = Field(ge=0)


class BKTParameters(_Model):
    """Bayesian Knowledge Tracing parameters of one learning objective.

    Each must lie in its range of :mod:`schemas.bkt_params` (the ranges and
    their reasons: docs/analytics.md, "Parameter bounds"); guess and slip below
    0.5 also make ``guess + slip < 1``.
    """

    prior: _Prior
    learn: _Learn
    guess: _Guess
    slip: _Slip
    #: Added within schema version 1 as an optional field with a default
    #: (None: no forgetting, as 0), so events without it stay valid, and
    #: parameters without forgetting encode exactly as before it existed.
    forget: float | None = Field(default=None, description=FORGET.reason)
    #: Why the fitter chose forgetting or not (None when set by hand).
    selection: ModelSelection | None = None

    @model_validator(mode="after")
    def _forget_in_range(self) -> BKTParameters:
        if self.forget is not None and not forget_accepted(self.forget, self.learn):
            raise ValueError(
                f"forget must be 0 or in [{FORGET.low}, {FORGET.high}] with "
                f"learn + forget < 1, got forget={self.forget}, learn={self.learn}"
            )
        return self


class ModuleTagged(_EventBase):
    """A module was tagged with the learning objectives it practises."""

    type: Literal["ModuleTagged"] = "ModuleTagged"
    #: 2: ``partner_id`` became required (version 1 had none).
    schema_version: Literal[2] = 2  # type: ignore[assignment]  # a narrower Literal: the event's own version
    #: The partner whose module this is: module and objective ids (and the
    #: objectives' parameters) are scoped per partner (docs/auth.md,
    #: "Ownership"), so one partner's tags never touch another's rows.
    partner_id: EntityId
    module_id: RefId
    learning_objective_ids: ObjectiveList
    parameters: (
        Annotated[
            dict[RefId, BKTParameters], Field(max_length=MAX_OBJECTIVES_PER_MODULE)
        ]
        | None
    ) = None
    #: Added within schema version 2 (optional): the module's name and its
    #: objectives' names, for the dashboard.
    module_name: DisplayName | None = None
    objective_names: (
        Annotated[dict[RefId, DisplayName], Field(max_length=MAX_OBJECTIVES_PER_MODULE)]
        | None
    ) = None

    @model_validator(mode="after")
    def _parameters_for_tagged(self) -> ModuleTagged:
        tagged = set(self.learning_objective_ids)
        for field_name, given in (
            ("parameters", self.parameters),
            ("objective_names", self.objective_names),
        ):
            extra = set(given or {}) - tagged
            if extra:
                raise ValueError(
                    f"{field_name} given for objectives the module is not tagged "
                    f"with: {sorted(extra)}"
                )
        return self


class AttemptGraded(_EventBase):
    """A learner's attempt at an item of a module was graded."""

    type: Literal["AttemptGraded"] = "AttemptGraded"
    attempt_id: EntityId
    registration_id: EntityId
    module_id: RefId
    is_correct: StrictBool  # JSON true/false only: never "no", 1 or "yes"
    interaction_end_time: Timestamp
    goal_id: EntityId | None = None


CatalogEvent: TypeAlias = Annotated[
    LearningInstanceCreated | GoalDefined | ModuleTagged,
    Field(discriminator="type"),
]
RegistrationEvent: TypeAlias = Annotated[
    RegistrationCreated | AttemptGraded, Field(discriminator="type")
]
Event: TypeAlias = Annotated[
    LearningInstanceCreated
    | RegistrationCreated
    | GoalDefined
    | ModuleTagged
    | AttemptGraded,
    Field(discriminator="type"),
]

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


class OldVersionRefused(ValueError):
    """A record of a past schema version that cannot be upcast: its reason
    names the event, the version and what it lacks."""


def decode_event(data: bytes | str) -> Event:
    """Parse one JSON record into its event model, upcasting past versions
    (raises pydantic ValidationError, or :class:`OldVersionRefused`)."""
    raw = data.encode() if isinstance(data, str) else data
    if b"ModuleTagged" in raw:
        raw = _upcast_module_tagged(raw)
    return _EVENT_ADAPTER.validate_json(raw)


def _upcast_module_tagged(raw: bytes) -> bytes:
    """ModuleTagged 1 -> 2. Version 1 was first written without
    ``partner_id``, later with it (before the version was bumped): with it the
    meaning is version 2's; without it the module's partner is unknown, and
    guessing it could change another partner's rows."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw  # pydantic says what is wrong with it
    if not (
        isinstance(value, dict)
        and value.get("type") == "ModuleTagged"
        and value.get("schema_version") == 1
    ):
        return raw
    if "partner_id" not in value:
        raise OldVersionRefused(
            "ModuleTagged schema_version 1 without partner_id cannot be upcast "
            "to version 2: partner_id is required since version 2 (modules are "
            "scoped per partner); send it again as version 2 with partner_id"
        )
    return orjson.dumps({**value, "schema_version": 2})


def encode_event(event: BaseModel) -> bytes:
    """Serialize an event to the JSON bytes carried on Kafka."""
    return event.model_dump_json(exclude_none=True).encode()
