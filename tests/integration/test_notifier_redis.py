"""The notifier's Redis side, on the real server (app/notifier.py): what it
appends for a deleted subscription, and what it does when its lease is taken.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from app.embedded import EmbeddedRedis
from app.notifier import Notifier
from infra.broker import profile_for
from infra.settings import Settings
from infra.webhook_store import RedisWebhookStore
from schemas.transitions import StatusChanged, transition_id
from schemas.webhooks import STATUS_CHANGED_TYPE, Subscription

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _change(partner: str) -> StatusChanged:
    return StatusChanged(
        transition_id=transition_id("e-1", "g-1"),
        partner_id=partner,
        learning_instance_id="li-1",
        registration_id="r-1",
        user_id="u-1",
        goal_id="g-1",
        previous_status="no_work",
        status="in_progress",
        occurred_at=NOW,
        event_id="e-1",
        source_partition=0,
        source_offset=7,
    )


def _notifier(redis_server: EmbeddedRedis, **settings: object) -> Notifier:
    s = Settings(**settings)  # type: ignore[arg-type]
    return Notifier(s, profile_for(s), "127.0.0.1:9", redis_server.url)


async def _subscribe(redis: Redis, partner: str) -> Subscription:
    sub = Subscription(
        id=uuid.uuid4().hex,
        partner_id=partner,
        url="http://127.0.0.1:9/hook",
        event_types=[STATUS_CHANGED_TYPE],
        created_at=NOW,
        created_by="test",
        secret="whsec_" + "A" * 32,
    )
    assert await RedisWebhookStore(redis).create(sub)
    return sub


def test_a_deleted_subscriptions_outbox_is_not_appended_to_again(
    redis_server: EmbeddedRedis,
) -> None:
    async def go() -> None:
        partner = f"p-{uuid.uuid4().hex[:8]}"
        notifier = _notifier(redis_server)
        redis = Redis.from_url(redis_server.url)
        store = RedisWebhookStore(redis)
        sub = await _subscribe(redis, partner)
        outbox = store.keys.outbox(partner, sub.id)
        raw = _change(partner).to_bytes()
        written = int(datetime.now(UTC).timestamp() * 1000)
        await notifier._enqueue([(raw, written)])
        assert await redis.xlen(outbox) == 1
        assert await store.delete(partner, sub.id)
        assert await redis.exists(outbox) == 0
        # The intake still holds the subscription (read less than a second
        # ago): the append is refused in Redis, no orphan outbox appears.
        await notifier._enqueue([(raw, written)])
        assert await redis.exists(outbox) == 0
        # Another partner's change never reaches this partner's outbox.
        other = await _subscribe(redis, partner)
        await notifier._enqueue([(_change("someone-else").to_bytes(), written)])
        assert await redis.exists(store.keys.outbox(partner, other.id)) == 0
        # A change the worker wrote before the subscription was made (an old
        # topic read by a first notifier) is not this subscription's.
        notifier._subs.clear()  # the intake's second-long cache of subscriptions
        before = int(other.created_at.timestamp() * 1000) - 1
        await notifier._enqueue([(raw, before)])
        assert await redis.exists(store.keys.outbox(partner, other.id)) == 0
        await notifier._enqueue([(raw, before + 1)])
        assert await redis.xlen(store.keys.outbox(partner, other.id)) == 1
        await redis.aclose()
        await notifier.redis.aclose()

    asyncio.run(go())


def test_a_taken_lease_stops_the_deliveries_without_an_error(
    redis_server: EmbeddedRedis,
) -> None:
    async def go() -> None:
        partner = f"p-{uuid.uuid4().hex[:8]}"
        notifier = _notifier(redis_server, notifier_lease_s=1.0)
        redis = Redis.from_url(redis_server.url)
        sub = await _subscribe(redis, partner)
        lease = notifier.keys.lease(partner, sub.id)
        await redis.set(lease, notifier.me, px=1000)
        task = asyncio.create_task(notifier._deliver_all(partner, sub.id))
        await asyncio.sleep(0.5)
        assert not task.done()  # it renews its lease and waits for changes
        await redis.set(lease, "another-notifier", px=10_000)
        await asyncio.wait_for(task, timeout=3)
        assert not task.cancelled() and task.exception() is None
        assert await redis.get(lease) == b"another-notifier"
        await redis.aclose()
        await notifier.redis.aclose()

    asyncio.run(go())
