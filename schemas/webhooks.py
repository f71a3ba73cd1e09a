"""Webhook subscriptions: the API's request and response bodies, and the
records stored in Redis for the notifier (docs/webhooks.md).

A partner subscribes a URL to event types; the notifier delivers each
:class:`schemas.transitions.StatusChanged` of that partner to it and records
every attempt (:class:`DeliveryAttempt`); a partner may ask for a delivery to
be sent again (:class:`RedeliveryRequest`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from schemas.transitions import StatusChanged

__all__ = [
    "EVENT_TYPES",
    "MAX_ERROR_CHARS",
    "MAX_URL_LENGTH",
    "STATUS_CHANGED_TYPE",
    "CreateWebhook",
    "DeliveryAttempt",
    "DeliveryList",
    "EventType",
    "RedeliveryQueued",
    "RedeliveryRequest",
    "Subscription",
    "Webhook",
    "WebhookCreated",
    "WebhookList",
]

EventType = Literal["org.mastery-stream.status.changed.v1"]
#: The CloudEvents ``type`` of a status change (infra/webhooks.py).
STATUS_CHANGED_TYPE: EventType = "org.mastery-stream.status.changed.v1"
#: Every event type a subscription may name.
EVENT_TYPES: tuple[EventType, ...] = (STATUS_CHANGED_TYPE,)

MAX_URL_LENGTH = 2048
#: A receiver's answer or a connection error is kept up to this many characters.
MAX_ERROR_CHARS = 512


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CreateWebhook(_Body):
    """``POST /webhooks``: where to send which events."""

    url: Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH)] = Field(
        description="http or https; it must resolve to public addresses only, "
        "unless the server allows private ones (docs/webhooks.md)"
    )
    event_types: Annotated[
        list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))
    ] = Field(description="the CloudEvents types to receive")

    @field_validator("event_types")
    @classmethod
    def _distinct(cls, value: list[EventType]) -> list[EventType]:
        if len(set(value)) != len(value):
            raise ValueError("event_types repeats a type")
        return value


class Webhook(_Body):
    """A subscription as the API shows it (never with its secret)."""

    id: str
    url: str
    event_types: list[EventType]
    created_at: AwareDatetime


class WebhookCreated(Webhook):
    """The answer to ``POST /webhooks``: the only time the secret is shown."""

    secret: str = Field(
        description="the signing secret (whsec_…); shown once, keep it safe"
    )


class WebhookList(_Body):
    webhooks: list[Webhook]


class Subscription(_Body):
    """A subscription as stored (``ms-webhooks:{partner}:subscriptions``)."""

    id: str
    partner_id: str
    url: str
    event_types: list[EventType]
    created_at: AwareDatetime
    created_by: str
    secret: str

    def public(self) -> Webhook:
        return Webhook(
            id=self.id,
            url=self.url,
            event_types=self.event_types,
            created_at=self.created_at,
        )


class DeliveryAttempt(_Body):
    """One attempt to deliver one transition to one subscription, as the
    notifier records it."""

    #: The delivery's id: its transition's id, also its ``webhook-id``.
    delivery_id: str
    #: 1 for the first attempt; a redelivery starts again at 1.
    attempt: int = Field(ge=1)
    at: AwareDatetime
    outcome: Literal["delivered", "failed", "dead_lettered"]
    #: The receiver's HTTP status, when it answered.
    status_code: int | None = None
    #: The start of the receiver's answer, or why there was none.
    response: Annotated[str, Field(max_length=MAX_ERROR_CHARS)] | None = None
    duration_ms: float = Field(ge=0)
    #: When the next attempt is due (``failed`` only).
    next_attempt_at: AwareDatetime | None = None
    transition: StatusChanged


class DeliveryList(_Body):
    deliveries: list[DeliveryAttempt]


class RedeliveryRequest(_Body):
    """A partner's request to send a delivery again, queued for the notifier
    (``ms-webhooks:{partner}:redeliveries``). Self-contained: it carries the
    transition, which the notifier signs afresh under the same id."""

    request_id: str
    partner_id: str
    webhook_id: str
    delivery_id: str
    requested_at: AwareDatetime
    requested_by: str
    transition: StatusChanged


class RedeliveryQueued(_Body):
    """The answer to a redeliver request (``202``)."""

    request_id: str
    webhook_id: str
    delivery_id: str
