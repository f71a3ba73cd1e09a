"""Webhook subscriptions, their recent delivery attempts and the redelivery
requests, in Redis: the key layout and the one store class the API and the
notifier share (docs/webhooks.md, "Storage").

Subscriptions are not derived from the event log, so they live outside the
read model's ``ms:*`` namespace: ``mastery rebuild --flush`` deletes a
generation's keys by that pattern and must never delete these. Every key of
one partner carries the hash tag ``{partner_id}``, so in Redis Cluster they
share a slot and each script below touches one slot only. Partner ids are
:data:`schemas.events.EntityId` (no ``{``, ``}`` nor ``:``).

Redis errors are raised as they are (the API answers them with 503).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from schemas.webhooks import DeliveryAttempt, RedeliveryRequest, Subscription

__all__ = [
    "MAX_DELIVERIES_KEPT",
    "MAX_PENDING_REDELIVERIES",
    "MAX_SUBSCRIPTIONS_PER_PARTNER",
    "QueueFull",
    "RedisWebhookStore",
    "WebhookKeys",
]

#: Subscriptions one partner may hold.
MAX_SUBSCRIPTIONS_PER_PARTNER = 20
#: Attempts kept per subscription, the newest first.
MAX_DELIVERIES_KEPT = 100
#: Redelivery requests one partner may have waiting for the notifier.
MAX_PENDING_REDELIVERIES = 1000


@dataclass(frozen=True, slots=True)
class WebhookKeys:
    """Key builders (``ms-webhooks`` by default)."""

    prefix: str = "ms-webhooks"

    def _partner(self, partner_id: str) -> str:
        return f"{self.prefix}:{{{partner_id}}}"

    def subscriptions(self, partner_id: str) -> str:
        """HASH subscription id -> JSON :class:`Subscription` (with its secret)."""
        return f"{self._partner(partner_id)}:subscriptions"

    def deliveries(self, partner_id: str, webhook_id: str) -> str:
        """LIST of JSON :class:`DeliveryAttempt`, the newest first, at most
        :data:`MAX_DELIVERIES_KEPT`; deleted with its subscription."""
        return f"{self._partner(partner_id)}:deliveries:{webhook_id}"

    def redeliveries(self, partner_id: str) -> str:
        """STREAM of redelivery requests (field ``request``: JSON
        :class:`RedeliveryRequest`). The notifier deletes (``XDEL``) an entry
        once it has acted on it, so its length is what waits."""
        return f"{self._partner(partner_id)}:redeliveries"

    def outbox(self, partner_id: str, webhook_id: str) -> str:
        """STREAM of the subscription's deliveries waiting, in order (field
        ``t``: the StatusChanged JSON). The notifier deletes the head once it
        is delivered or dead-lettered."""
        return f"{self._partner(partner_id)}:outbox:{webhook_id}"

    def retry(self, partner_id: str, webhook_id: str) -> str:
        """HASH of the outbox head's retry state: ``entry``, ``attempt``
        (failed attempts so far), ``first`` and ``next`` (epoch seconds)."""
        return f"{self._partner(partner_id)}:retry:{webhook_id}"

    def lease(self, partner_id: str, webhook_id: str) -> str:
        """STRING: the notifier delivering the subscription (expires)."""
        return f"{self._partner(partner_id)}:lease:{webhook_id}"

    def partners(self) -> str:
        """SET of partner ids that have subscribed at least once: where the
        notifier looks for redelivery requests. In no partner's slot."""
        return f"{self.prefix}:partners"


# KEYS: subscriptions. ARGV: limit, id, JSON. 1 if stored, 0 at the limit.
_CREATE_LUA = """
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
"""

# KEYS: subscriptions, deliveries, outbox, retry. ARGV: id. 1 if deleted, 0
# if unknown.
_DELETE_LUA = """
local gone = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return gone
"""

# KEYS: subscriptions, deliveries. ARGV: id, JSON, kept. A deleted
# subscription's attempts are not recorded (an attempt in flight at the delete).
_RECORD_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return 1
"""

# KEYS: subscriptions, redeliveries. ARGV: id, JSON, limit. The entry id, 0
# when the subscription is gone, -1 when the partner's queue is full.
_REDELIVER_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
return redis.call('XADD', KEYS[2], '*', 'request', ARGV[2])
"""


class RedisWebhookStore:
    """Subscriptions, attempts and redelivery requests of every partner."""

    def __init__(
        self,
        redis: Redis,
        keys: WebhookKeys | None = None,
        *,
        max_subscriptions: int = MAX_SUBSCRIPTIONS_PER_PARTNER,
        deliveries_kept: int = MAX_DELIVERIES_KEPT,
        max_pending_redeliveries: int = MAX_PENDING_REDELIVERIES,
    ) -> None:
        self.redis = redis
        self.keys = keys or WebhookKeys()
        self.max_subscriptions = max_subscriptions
        self.deliveries_kept = deliveries_kept
        self.max_pending_redeliveries = max_pending_redeliveries
        self._create = redis.register_script(_CREATE_LUA)
        self._delete = redis.register_script(_DELETE_LUA)
        self._record = redis.register_script(_RECORD_LUA)
        self._redeliver = redis.register_script(_REDELIVER_LUA)

    async def create(self, subscription: Subscription) -> bool:
        """Store ``subscription``; ``False`` if its partner is at the limit."""
        partner = subscription.partner_id
        # First: a partner listed without subscriptions costs the notifier a
        # look; a subscription whose partner is not listed would lose its
        # redelivery requests.
        await self.redis.sadd(self.keys.partners(), partner)
        stored = await self._create(
            keys=[self.keys.subscriptions(partner)],
            args=[
                self.max_subscriptions,
                subscription.id,
                subscription.model_dump_json(),
            ],
        )
        return int(stored) == 1

    async def subscriptions(self, partner_id: str) -> list[Subscription]:
        """The partner's subscriptions, oldest first."""
        raw = await self.redis.hvals(self.keys.subscriptions(partner_id))
        subs = [Subscription.model_validate_json(value) for value in raw]
        return sorted(subs, key=lambda s: (s.created_at, s.id))

    async def get(self, partner_id: str, webhook_id: str) -> Subscription | None:
        raw = await self.redis.hget(self.keys.subscriptions(partner_id), webhook_id)
        return None if raw is None else Subscription.model_validate_json(raw)

    async def delete(self, partner_id: str, webhook_id: str) -> bool:
        """Delete a subscription, its attempts and its waiting deliveries;
        ``False`` if unknown."""
        gone = await self._delete(
            keys=[
                self.keys.subscriptions(partner_id),
                self.keys.deliveries(partner_id, webhook_id),
                self.keys.outbox(partner_id, webhook_id),
                self.keys.retry(partner_id, webhook_id),
            ],
            args=[webhook_id],
        )
        return int(gone) == 1

    async def record_delivery(
        self, partner_id: str, webhook_id: str, attempt: DeliveryAttempt
    ) -> bool:
        """Keep ``attempt`` among the subscription's last
        :attr:`deliveries_kept`; ``False`` if the subscription is gone."""
        recorded = await self._record(
            keys=[
                self.keys.subscriptions(partner_id),
                self.keys.deliveries(partner_id, webhook_id),
            ],
            args=[webhook_id, attempt.model_dump_json(), self.deliveries_kept],
        )
        return int(recorded) == 1

    async def record_deliveries(
        self, attempts: Iterable[tuple[str, str, DeliveryAttempt]]
    ) -> None:
        """:meth:`record_delivery` for each ``(partner_id, webhook_id,
        attempt)``, in one round trip (a full outbox's refusals)."""
        pipe = self.redis.pipeline(transaction=False)
        for partner_id, webhook_id, attempt in attempts:
            await self._record(
                keys=[
                    self.keys.subscriptions(partner_id),
                    self.keys.deliveries(partner_id, webhook_id),
                ],
                args=[webhook_id, attempt.model_dump_json(), self.deliveries_kept],
                client=pipe,
            )
        await pipe.execute()

    async def deliveries(
        self, partner_id: str, webhook_id: str
    ) -> list[DeliveryAttempt]:
        """The subscription's recent attempts, the newest first."""
        raw = await self.redis.lrange(
            self.keys.deliveries(partner_id, webhook_id), 0, self.deliveries_kept - 1
        )
        return [DeliveryAttempt.model_validate_json(value) for value in raw]

    async def request_redelivery(self, request: RedeliveryRequest) -> str | None:
        """Queue ``request`` for the notifier: the stream entry's id, or
        ``None`` when the subscription is gone. Raises :class:`QueueFull`
        when the partner already has :attr:`max_pending_redeliveries`."""
        partner = request.partner_id
        entry = await self._redeliver(
            keys=[
                self.keys.subscriptions(partner),
                self.keys.redeliveries(partner),
            ],
            args=[
                request.webhook_id,
                request.model_dump_json(),
                self.max_pending_redeliveries,
            ],
        )
        if isinstance(entry, bytes):
            return entry.decode()
        if int(entry) == -1:
            raise QueueFull(partner, self.max_pending_redeliveries)
        return None

    async def pending_redeliveries(
        self, partner_id: str, count: int = 100
    ) -> list[tuple[str, RedeliveryRequest]]:
        """The partner's waiting redelivery requests, oldest first, with
        their entry ids (for :meth:`redelivery_done`)."""
        # The client decodes nothing (no decode_responses): ids and fields are bytes.
        entries: Any = await self.redis.xrange(
            self.keys.redeliveries(partner_id), count=count
        )
        return [
            (
                bytes(entry_id).decode(),
                RedeliveryRequest.model_validate_json(fields[b"request"]),
            )
            for entry_id, fields in entries
        ]

    async def redelivery_done(self, partner_id: str, entry_id: str) -> None:
        """Remove a request the notifier has acted on."""
        await self.redis.xdel(self.keys.redeliveries(partner_id), entry_id)


class QueueFull(Exception):
    """A partner's redelivery queue is at its bound."""

    def __init__(self, partner_id: str, limit: int) -> None:
        super().__init__(
            f"partner {partner_id!r} already has {limit} redelivery requests waiting"
        )
        self.partner_id = partner_id
        self.limit = limit
