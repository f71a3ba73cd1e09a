"""The webhook subscription endpoints (api/webhooks.py) over the real Redis:
create, list, get, delete; the secret shown once; partner isolation; the
role; URL checks; the bound per partner; the deliveries the notifier records
and the redelivery queue it reads (infra/webhook_store.py)."""

from __future__ import annotations

import asyncio
import fnmatch
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
import pytest
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.devstack.embedded import EmbeddedRedis
from infra.read_model import ReadModelKeys
from infra.webhook_store import (
    MAX_DELIVERIES_KEPT,
    MAX_SUBSCRIPTIONS_PER_PARTNER,
    RedisWebhookStore,
    WebhookKeys,
)
from schemas.transitions import StatusChanged, transition_id
from schemas.webhooks import STATUS_CHANGED_TYPE, DeliveryAttempt
from tests.integration.auth_world import bearer, build_app

pytestmark = pytest.mark.integration

T = TypeVar("T")
HOOK = {"url": "http://127.0.0.1:9/hook", "event_types": [STATUS_CHANGED_TYPE]}
ENDPOINTS = [
    ("POST", "/webhooks"),
    ("GET", "/webhooks"),
    ("GET", "/webhooks/{id}"),
    ("DELETE", "/webhooks/{id}"),
    ("GET", "/webhooks/{id}/deliveries"),
    ("POST", "/webhooks/{id}/deliveries/{id}/redeliver"),
]


def _partner() -> str:
    """A partner of its own per test: the session's Redis is shared."""
    return f"wh-{uuid.uuid4().hex[:12]}"


def admin(partner: str) -> dict[str, str]:
    return bearer(f"admin-{partner}", partner, ("partner_admin",))


@contextmanager
def _client(redis_url: str, **app_kw: Any) -> Iterator[TestClient]:
    store_kw = app_kw.pop("store_kw", {})
    app = build_app(
        redis_url,
        None,
        "webhooks",
        webhooks=RedisWebhookStore(Redis.from_url(redis_url), **store_kw),
        **app_kw,
    )
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def client(redis_server: EmbeddedRedis) -> Iterator[TestClient]:
    with _client(redis_server.url) as c:
        yield c


def _with_store(
    url: str, use: Callable[[RedisWebhookStore, Redis], Awaitable[T]], **kw: Any
) -> T:
    """``use`` run with a store on its own client and event loop."""

    async def run() -> T:
        redis = Redis.from_url(url)
        try:
            return await use(RedisWebhookStore(redis, **kw), redis)
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _transition(partner: str, n: int = 0) -> StatusChanged:
    event_id = f"e-{n}"
    return StatusChanged(
        transition_id=transition_id(event_id, "goal-a"),
        partner_id=partner,
        learning_instance_id="li-a",
        registration_id="reg-a1",
        user_id="la1",
        goal_id="goal-a",
        previous_status="in_progress",
        status="struggling",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n),
        event_id=event_id,
        source_partition=0,
        source_offset=n,
    )


def _attempt(
    partner: str, n: int, attempt: int = 1, outcome: str = "failed"
) -> DeliveryAttempt:
    t = _transition(partner, n)
    return DeliveryAttempt(
        delivery_id=t.transition_id,
        attempt=attempt,
        at=datetime(2026, 1, 2, tzinfo=UTC) + timedelta(seconds=10 * n + attempt),
        outcome=outcome,  # type: ignore[arg-type]
        status_code=503 if outcome == "failed" else 204,
        response="Service Unavailable" if outcome == "failed" else None,
        duration_ms=12.5,
        transition=t,
    )


def _create(client: TestClient, partner: str, **body: Any) -> dict[str, Any]:
    r = client.post("/webhooks", json=HOOK | body, headers=admin(partner))
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


# --- create, list, get, delete -------------------------------------------------


def test_create_list_get_delete(client: TestClient) -> None:
    p = _partner()
    r = client.post("/webhooks", json=HOOK, headers=admin(p))
    assert r.status_code == 201, r.text
    created = r.json()
    hook_id = created["id"]
    assert r.headers["location"] == f"/webhooks/{hook_id}"
    assert set(created) == {"id", "url", "event_types", "created_at", "secret"}
    assert created["url"] == HOOK["url"]
    assert created["event_types"] == [STATUS_CHANGED_TYPE]
    assert created["secret"].startswith("whsec_")
    shown = {k: v for k, v in created.items() if k != "secret"}

    listed = client.get("/webhooks", headers=admin(p))
    assert listed.status_code == 200
    assert listed.json() == {"webhooks": [shown]}
    one = client.get(f"/webhooks/{hook_id}", headers=admin(p))
    assert one.status_code == 200
    assert one.json() == shown

    second = _create(client, p, url="https://10.0.0.2/other")
    ids = [
        w["id"] for w in client.get("/webhooks", headers=admin(p)).json()["webhooks"]
    ]
    assert ids == [hook_id, second["id"]]  # oldest first

    gone = client.delete(f"/webhooks/{hook_id}", headers=admin(p))
    assert gone.status_code == 204
    assert gone.content == b""
    for method in ("GET", "DELETE"):
        r = client.request(method, f"/webhooks/{hook_id}", headers=admin(p))
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
    ids = [
        w["id"] for w in client.get("/webhooks", headers=admin(p)).json()["webhooks"]
    ]
    assert ids == [second["id"]]


def test_the_secret_is_shown_once(client: TestClient) -> None:
    p = _partner()
    created = _create(client, p)
    secret = created["secret"]
    for path in ("/webhooks", f"/webhooks/{created['id']}"):
        r = client.get(path, headers=admin(p))
        assert r.status_code == 200
        assert secret.encode() not in r.content
        assert b"secret" not in r.content
    # Each subscription has its own secret.
    assert _create(client, p)["secret"] != secret


def test_the_stored_subscription_keeps_the_secret_the_post_showed(
    client: TestClient, redis_server: EmbeddedRedis
) -> None:
    p = _partner()
    created = _create(client, p)

    async def read(store: RedisWebhookStore, redis: Redis) -> Any:
        # ... and the partner is where the notifier looks for redeliveries.
        assert await redis.sismember(store.keys.partners(), p)
        return await store.get(p, created["id"])

    stored = _with_store(redis_server.url, read)
    assert stored is not None
    assert stored.secret == created["secret"]
    assert stored.partner_id == p
    assert stored.created_by == f"admin-{p}"


# --- partners and roles ----------------------------------------------------------


def test_another_partner_gets_404_exactly_as_for_an_unknown_id(
    client: TestClient, redis_server: EmbeddedRedis
) -> None:
    a, b = _partner(), _partner()
    hook_id = _create(client, a)["id"]
    delivery = _attempt(a, 1)

    async def record(store: RedisWebhookStore, redis: Redis) -> bool:
        return await store.record_delivery(a, hook_id, delivery)

    assert _with_store(redis_server.url, record)
    _create(client, b, url="http://127.0.0.1:9/b")

    paths = [
        ("GET", f"/webhooks/{hook_id}"),
        ("DELETE", f"/webhooks/{hook_id}"),
        ("GET", f"/webhooks/{hook_id}/deliveries"),
        ("POST", f"/webhooks/{hook_id}/deliveries/{delivery.delivery_id}/redeliver"),
    ]
    foreign = [client.request(m, path, headers=admin(b)) for m, path in paths]
    assert [r.status_code for r in foreign] == [404] * 4
    listed = client.get("/webhooks", headers=admin(b))
    assert hook_id not in listed.text
    assert len(listed.json()["webhooks"]) == 1
    # A's subscription survived B's delete, and nothing was queued for it.
    assert client.get(f"/webhooks/{hook_id}", headers=admin(a)).status_code == 200

    async def pending(store: RedisWebhookStore, redis: Redis) -> Any:
        return await store.pending_redeliveries(a)

    assert _with_store(redis_server.url, pending) == []

    # Once the id is really unknown, A gets byte for byte what B got.
    assert client.delete(f"/webhooks/{hook_id}", headers=admin(a)).status_code == 204
    unknown = [client.request(m, path, headers=admin(a)) for m, path in paths]
    assert [r.content for r in unknown] == [r.content for r in foreign]
    assert orjson.loads(foreign[0].content) == {
        "error": {
            "code": "not_found",
            "message": f"webhook_id {hook_id!r} not found",
            "details": {"field": "webhook_id"},
        }
    }


@pytest.mark.parametrize(
    "roles", [("ingest",), (), ("instructor",)], ids=["ingest", "none", "unknown"]
)
def test_only_a_partner_admin_may_call(
    client: TestClient, roles: tuple[str, ...]
) -> None:
    p = _partner()
    hook_id = _create(client, p)["id"]
    caller = bearer("svc", p, roles)
    for method, path in ENDPOINTS:
        r = client.request(
            method, path.replace("{id}", hook_id), json=HOOK, headers=caller
        )
        assert r.status_code == 403, (method, path, r.text)
        error = r.json()["error"]
        assert error["code"] == "forbidden"
        assert error["details"] == {"required_roles": ["partner_admin"]}
    assert client.get(f"/webhooks/{hook_id}", headers=admin(p)).status_code == 200


def test_no_token_is_401(client: TestClient) -> None:
    for method, path in ENDPOINTS:
        r = client.request(method, path.replace("{id}", "x"), json=HOOK)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")


# --- what a subscription may be ------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest", "link-local"),
        ("http://[::ffff:192.168.0.1]/hook", "private"),
        ("http://localhost:8080/hook", "resolves to"),
        ("ftp://93.184.216.34/hook", "http or https"),
        ("https://user:pw@93.184.216.34/hook", "user name or password"),
    ],
)
def test_a_refused_url_is_a_400_naming_the_field(
    redis_server: EmbeddedRedis, url: str, reason: str
) -> None:
    p = _partner()
    with _client(redis_server.url, allow_private_webhook_urls=False) as strict:
        r = strict.post("/webhooks", json=HOOK | {"url": url}, headers=admin(p))
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "url_refused"
        assert error["details"]["field"] == "url"
        assert reason in error["details"]["reason"]
        assert reason in error["message"]
        # A public address is fine; nothing of the refused ones was stored.
        ok = strict.post(
            "/webhooks",
            json=HOOK | {"url": "https://93.184.216.34/hook"},
            headers=admin(p),
        )
        assert ok.status_code == 201, ok.text
        listed = strict.get("/webhooks", headers=admin(p)).json()["webhooks"]
        assert [w["url"] for w in listed] == ["https://93.184.216.34/hook"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"url": "http://127.0.0.1/", "event_types": ["com.example.other"]},
            "event_types.0",
        ),
        ({"url": "http://127.0.0.1/", "event_types": []}, "event_types"),
        ({"url": "http://127.0.0.1/"}, "event_types"),
        (
            {"url": "http://127.0.0.1/", "event_types": [STATUS_CHANGED_TYPE] * 2},
            "event_types",
        ),
        (
            {
                "url": "http://127.0.0.1/" + "a" * 2048,
                "event_types": [STATUS_CHANGED_TYPE],
            },
            "url",
        ),
        ({"url": "", "event_types": [STATUS_CHANGED_TYPE]}, "url"),
        (HOOK | {"secret": "whsec_mine"}, "secret"),
    ],
)
def test_an_invalid_body_is_a_400_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    r = client.post("/webhooks", json=body, headers=admin(_partner()))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in {d["field"] for d in error["details"]}


def test_a_url_of_2048_characters_is_accepted(client: TestClient) -> None:
    url = "http://127.0.0.1/"
    url += "a" * (2048 - len(url))
    assert _create(client, _partner(), url=url)["url"] == url


def test_a_partner_holds_at_most_its_limit_of_subscriptions(client: TestClient) -> None:
    p, other = _partner(), _partner()
    ids = [_create(client, p)["id"] for _ in range(MAX_SUBSCRIPTIONS_PER_PARTNER)]
    r = client.post("/webhooks", json=HOOK, headers=admin(p))
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "too_many_webhooks"
    assert error["details"] == {"limit": MAX_SUBSCRIPTIONS_PER_PARTNER}
    assert len(client.get("/webhooks", headers=admin(p)).json()["webhooks"]) == 20
    _create(client, other)  # another partner's count is its own
    assert client.delete(f"/webhooks/{ids[0]}", headers=admin(p)).status_code == 204
    _create(client, p)


def test_invalid_path_ids_are_a_400(client: TestClient) -> None:
    r = client.get("/webhooks/not%20an%20id", headers=admin(_partner()))
    assert r.status_code == 400
    assert r.json()["error"]["details"] == {"field": "webhook_id"}


# --- deliveries and redeliveries -------------------------------------------------


def test_deliveries_list_the_recorded_attempts_newest_first(
    client: TestClient, redis_server: EmbeddedRedis
) -> None:
    p = _partner()
    hook_id = _create(client, p)["id"]
    assert client.get(f"/webhooks/{hook_id}/deliveries", headers=admin(p)).json() == {
        "deliveries": []
    }
    attempts = [
        _attempt(p, 1, 1),
        _attempt(p, 1, 2),
        _attempt(p, 1, 3, "delivered"),
        _attempt(p, 2, 1, "delivered"),
    ]

    async def record(store: RedisWebhookStore, redis: Redis) -> list[bool]:
        return [await store.record_delivery(p, hook_id, a) for a in attempts]

    assert _with_store(redis_server.url, record) == [True] * 4
    r = client.get(f"/webhooks/{hook_id}/deliveries", headers=admin(p))
    assert r.status_code == 200
    listed = r.json()["deliveries"]
    assert listed == [a.model_dump(mode="json") for a in reversed(attempts)]
    assert listed[1]["transition"]["transition_id"] == listed[1]["delivery_id"]


def test_the_recorded_attempts_are_bounded_and_go_with_their_subscription(
    client: TestClient, redis_server: EmbeddedRedis
) -> None:
    p = _partner()
    hook_id = _create(client, p)["id"]
    keys = WebhookKeys()
    total = MAX_DELIVERIES_KEPT + 7

    async def record(store: RedisWebhookStore, redis: Redis) -> int:
        for n in range(total):
            assert await store.record_delivery(p, hook_id, _attempt(p, n))
        return int(await redis.llen(keys.deliveries(p, hook_id)))

    assert _with_store(redis_server.url, record) == MAX_DELIVERIES_KEPT
    listed = client.get(f"/webhooks/{hook_id}/deliveries", headers=admin(p)).json()
    offsets = [d["transition"]["source_offset"] for d in listed["deliveries"]]
    assert offsets == list(range(total - 1, total - 1 - MAX_DELIVERIES_KEPT, -1))

    assert client.delete(f"/webhooks/{hook_id}", headers=admin(p)).status_code == 204

    async def after_delete(store: RedisWebhookStore, redis: Redis) -> tuple[int, bool]:
        # An attempt still in flight at the delete is not recorded.
        late = await store.record_delivery(p, hook_id, _attempt(p, 999))
        return int(await redis.exists(keys.deliveries(p, hook_id))), late

    assert _with_store(redis_server.url, after_delete) == (0, False)


def test_redeliver_queues_the_delivery_for_the_notifier(
    client: TestClient, redis_server: EmbeddedRedis
) -> None:
    p = _partner()
    hook_id = _create(client, p)["id"]
    dead = _attempt(p, 5, 15, "dead_lettered")

    async def record(store: RedisWebhookStore, redis: Redis) -> bool:
        await store.record_delivery(p, hook_id, _attempt(p, 6, 1, "delivered"))
        return await store.record_delivery(p, hook_id, dead)

    assert _with_store(redis_server.url, record)
    path = f"/webhooks/{hook_id}/deliveries/{dead.delivery_id}/redeliver"
    r = client.post(path, headers=admin(p))
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["webhook_id"] == hook_id
    assert queued["delivery_id"] == dead.delivery_id

    async def pending(store: RedisWebhookStore, redis: Redis) -> Any:
        return await store.pending_redeliveries(p)

    [(entry_id, request)] = _with_store(redis_server.url, pending)
    assert request.request_id == queued["request_id"]
    assert (request.partner_id, request.webhook_id) == (p, hook_id)
    assert request.delivery_id == dead.delivery_id
    assert request.transition == dead.transition
    assert request.requested_by == f"admin-{p}"

    unknown = client.post(
        f"/webhooks/{hook_id}/deliveries/no-such-delivery/redeliver", headers=admin(p)
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["details"] == {"field": "delivery_id"}

    async def done(store: RedisWebhookStore, redis: Redis) -> Any:
        await store.redelivery_done(p, entry_id)
        return await store.pending_redeliveries(p)

    assert _with_store(redis_server.url, done) == []


def test_a_partner_s_redelivery_queue_is_bounded(redis_server: EmbeddedRedis) -> None:
    p = _partner()
    with _client(redis_server.url, store_kw={"max_pending_redeliveries": 2}) as small:
        hook_id = _create(small, p)["id"]
        attempt = _attempt(p, 1)

        async def record(store: RedisWebhookStore, redis: Redis) -> bool:
            return await store.record_delivery(p, hook_id, attempt)

        assert _with_store(redis_server.url, record)
        path = f"/webhooks/{hook_id}/deliveries/{attempt.delivery_id}/redeliver"
        codes = [small.post(path, headers=admin(p)).status_code for _ in range(2)]
        assert codes == [202, 202]
        r = small.post(path, headers=admin(p))
        assert r.status_code == 429
        assert r.headers["retry-after"] == "60"
        assert r.json()["error"]["code"] == "too_many_redeliveries"
        assert r.json()["error"]["details"] == {"limit": 2, "scope": "partner"}


# --- storage -------------------------------------------------------------------


def test_keys_share_the_partner_s_slot_and_stay_out_of_the_read_model() -> None:
    keys, model = WebhookKeys(), ReadModelKeys()
    partner_keys = [
        keys.subscriptions("p1"),
        keys.deliveries("p1", "hook-1"),
        keys.redeliveries("p1"),
    ]
    for key in [*partner_keys, keys.partners()]:
        # `mastery rebuild --flush` deletes what this pattern and owns() match.
        assert not fnmatch.fnmatchcase(key, model.pattern())
        assert not model.owns(key)
    for key in partner_keys:
        assert key[key.index("{") + 1 : key.index("}")] == "p1"
    assert "{" not in keys.partners()


def test_redis_unreachable_is_a_503_not_a_500() -> None:
    with _client("redis://127.0.0.1:1/0") as down:
        for method, path in ENDPOINTS:
            r = down.request(
                method, path.replace("{id}", "x"), json=HOOK, headers=admin("p1")
            )
            assert r.status_code == 503, (method, path, r.text)
            assert r.json()["error"]["code"] == "read_model_unavailable"
            assert "retry-after" in r.headers


def test_without_a_store_the_endpoints_answer_503(redis_server: EmbeddedRedis) -> None:
    app = build_app(redis_server.url, None, "webhooks-none", webhooks=None)
    with TestClient(app) as c:
        r = c.get("/webhooks", headers=admin("p1"))
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "webhooks_unavailable"
