"""The notifier's Redis side, on the real server (app/notifier/service.py): what it
appends for a deleted subscription, what it does when its lease is taken,
what a full outbox does with a change, and what its probe samples
(app/notifier/metrics.py).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.devstack.embedded import EmbeddedRedis, free_port
from app.notifier.metrics import NotifierMetrics, NotifierProbe
from app.notifier.service import Notifier
from infra.broker import profile_for
from infra.settings import Settings
from infra.webhook_store import RedisWebhookStore
from schemas.transitions import StatusChanged, transition_id
from schemas.webhooks import STATUS_CHANGED_TYPE, Subscription
from tests.waiting import wait_for_async

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _change(partner: str, event_id: str = "e-1") -> StatusChanged:
    return StatusChanged(
        transition_id=transition_id(event_id, "g-1"),
        partner_id=partner,
        learning_instance_id="li-1",
        registration_id="r-1",
        user_id="u-1",
        goal_id="g-1",
        previous_status="no_work",
        status="in_progress",
        occurred_at=NOW,
        event_id=event_id,
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
        lowest = [await redis.pttl(lease)]
        task = asyncio.create_task(notifier._deliver_all(partner, sub.id))

        async def extended() -> bool:
            """The lease's time to live went up: the notifier renewed it."""
            left = int(await redis.pttl(lease))
            went_up = left > lowest[0]
            lowest[0] = min(lowest[0], left)
            return went_up

        await wait_for_async(extended, timeout_s=3, what=f"a renewal of {lease}")
        assert not task.done()  # it renews its lease and waits for changes
        await redis.set(lease, "another-notifier", px=10_000)
        await asyncio.wait_for(task, timeout=3)
        assert not task.cancelled() and task.exception() is None
        assert await redis.get(lease) == b"another-notifier"
        await redis.aclose()
        await notifier.redis.aclose()

    asyncio.run(go())


def _samples(metrics: NotifierMetrics) -> dict[str, float]:
    """Every sample of the exposition, by ``name`` or ``name{label="v"}``."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def test_a_full_outbox_dead_letters_the_newest_changes_with_their_payload(
    redis_server: EmbeddedRedis,
) -> None:
    """Bound 3, five changes: the first three wait in the outbox, in order;
    the last two are recorded as dead-lettered ("outbox full") with their
    transition (what POST …/redeliver sends), counted, and nothing else."""

    async def go() -> None:
        partner = f"p-{uuid.uuid4().hex[:8]}"
        notifier = _notifier(redis_server, notifier_outbox_max=3)
        redis = Redis.from_url(redis_server.url)
        store = RedisWebhookStore(redis)
        sub = await _subscribe(redis, partner)
        changes = [_change(partner, f"e-{i}") for i in range(5)]
        written = int(datetime.now(UTC).timestamp() * 1000)
        await notifier._enqueue([(c.to_bytes(), written) for c in changes[:4]])
        await notifier._enqueue([(changes[4].to_bytes(), written)])
        outbox: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(
            store.keys.outbox(partner, sub.id)
        )
        assert [StatusChanged.from_bytes(f[b"t"]) for _, f in outbox] == changes[:3]
        recorded = await store.deliveries(partner, sub.id)
        assert [d.transition for d in recorded] == [changes[4], changes[3]]
        for d in recorded:
            assert d.outcome == "dead_lettered"
            assert d.delivery_id == d.transition.transition_id
            assert d.status_code is None
            assert d.response is not None and d.response.startswith("outbox full")
        assert notifier.stats.outbox_full == 2
        assert notifier.stats.enqueued == 3
        samples = _samples(notifier.metrics)
        assert samples['mastery_notifier_deliveries_total{outcome="outbox_full"}'] == 2
        assert samples['mastery_notifier_deliveries_total{outcome="delivered"}'] == 0
        assert samples["mastery_notifier_appends_total"] == 3
        assert samples["mastery_notifier_changes_total"] == 5
        assert samples["mastery_notifier_outbox_max_entries"] == 3
        # Once the head is gone, there is room for one change again.
        head_id = outbox[0][0]
        await notifier._done_with_head(sub, head_id.decode())
        await notifier._enqueue([(changes[4].to_bytes(), written)])
        assert await redis.xlen(store.keys.outbox(partner, sub.id)) == 3
        assert notifier.stats.outbox_full == 2
        await redis.aclose()
        await notifier.redis.aclose()

    asyncio.run(go())


def test_the_probe_samples_the_held_outboxes_and_names_what_is_unreachable(
    redis_server: EmbeddedRedis,
) -> None:
    async def go() -> None:
        redis = Redis.from_url(redis_server.url)
        prefix = f"probe-{uuid.uuid4().hex[:8]}"
        keys = [f"{prefix}:a", f"{prefix}:b", f"{prefix}:none"]
        for _ in range(3):
            await redis.xadd(keys[0], {"t": b"x"})
        await redis.xadd(keys[1], {"t": b"x"})
        metrics = NotifierMetrics()
        probe = NotifierProbe(metrics, redis, lambda: keys, lambda: None)
        assert probe.ready() is not None  # nothing sampled yet
        await probe.sample()
        samples = _samples(metrics)
        assert samples["mastery_notifier_outbox_entries"] == 4
        assert samples["mastery_notifier_outbox_longest_entries"] == 3
        # Redis answered; the broker was not reached (no consumer yet).
        why = probe.ready()
        assert why is not None and why.startswith("broker:"), why
        # A Redis nobody listens on: named as the reason.
        closed = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
        down = NotifierProbe(NotifierMetrics(), closed, lambda: keys, lambda: None)
        await down.sample()
        why = down.ready()
        assert why is not None and why.startswith("Redis: ") and "Connection" in why
        await closed.aclose()
        await redis.aclose()

    asyncio.run(go())
