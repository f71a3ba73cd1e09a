"""A small world of two partners for the API's auth, ingest and fuzz tests.

Seeded into the real Redis through the worker's own projector; the app is the
real one over real Redis and, for ingest, the real embedded broker.

partner p1: li-a (learners reg-a1 user la1, reg-a2 user la2; instructor ti-a
            with registration reg-ti-a; goal g-a), li-b (learner reg-b1 user
            lb1; goal g-b)
partner p2: li-x (learner reg-x1 user lx1; instructor tx; goal g-x)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import orjson
from starlette.applications import Starlette
from starlette.testclient import TestClient

from api.app import create_app
from api.auth import BearerAuthenticator
from api.change_hub import ChangeHub
from api.dashboard import RedisViewStore
from api.facts import RedisFactStore
from api.sink import KafkaEventSink
from api.store import RedisPageStore
from api.tokens import verifier_from_settings
from infra.broker import ensure_topics, profile_for
from infra.read_model import Projection, ReadModelKeys, RedisProjector
from infra.redis_client import redis_client
from infra.settings import Settings
from infra.tokens import mint_token
from infra.topic_names import TopicNames
from infra.webhook_store import RedisWebhookStore
from schemas.events import (
    GoalDefined,
    LearningInstanceCreated,
    RegistrationCreated,
    Target,
)

__all__ = [
    "GOAL_OF",
    "LI_OF_REG",
    "PARTNER_OF_LI",
    "SETTINGS",
    "api_client",
    "bearer",
    "build_app",
    "seed_world",
]

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = Settings(jwt_hs256_secret="auth-world-secret-" + "k" * 32)
PARTNER_OF_LI = {"li-a": "p1", "li-b": "p1", "li-x": "p2"}
GOAL_OF = {"li-a": "goal-a", "li-b": "goal-b", "li-x": "goal-x"}
#: registration -> (learning instance, user, role)
REGISTRATIONS = {
    "reg-a1": ("li-a", "la1", "learner"),
    "reg-a2": ("li-a", "la2", "learner"),
    "reg-ti-a": ("li-a", "ti-a", "instructor"),
    "reg-b1": ("li-b", "lb1", "learner"),
    "reg-x1": ("li-x", "lx1", "learner"),
    "reg-tx": ("li-x", "tx", "instructor"),
}
LI_OF_REG = {reg: li for reg, (li, _, _) in REGISTRATIONS.items()}


def bearer(
    sub: str, partner_id: str, roles: tuple[str, ...] = (), **kw: int
) -> dict[str, str]:
    token = mint_token(SETTINGS, sub=sub, partner_id=partner_id, roles=roles, **kw)
    return {"authorization": f"Bearer {token}"}


def _row(goal_id: str, reg: str) -> bytes:
    return orjson.dumps(
        {
            "goal_id": goal_id,
            "status": "in_progress",
            "progress": 0.5,
            "work_remaining": 3,
            "targets": [
                {"target_id": "lo-1", "status": "in_progress", "progress": 0.5}
            ],
        }
    )


async def seed(url: str, cluster: bool = False) -> None:
    """The world, written through the worker's projector."""
    redis = redis_client(url, cluster=cluster)
    await redis.flushall()
    # what a worker's repair pass sets once the read model is whole
    await redis.set(ReadModelKeys().materialized(), b"{}")
    p = Projection(ReadModelKeys())
    for li, partner in PARTNER_OF_LI.items():
        p.learning_instance(
            LearningInstanceCreated(
                event_id=f"e-{li}",
                occurred_at=T0,
                learning_instance_id=li,
                partner_id=partner,
            )
        )
        goal = GoalDefined(
            event_id=f"e-{GOAL_OF[li]}",
            occurred_at=T0,
            goal_id=GOAL_OF[li],
            learning_instance_id=li,
            targets=[Target(learning_objective_id="lo-1")],
        )
        template = _row(goal.goal_id, "template").replace(b"in_progress", b"no_work")
        p.goal(goal, template)
    for n, (reg, (li, user, role)) in enumerate(REGISTRATIONS.items()):
        p.registration(
            RegistrationCreated(
                event_id=f"e-{reg}",
                occurred_at=T0 + timedelta(seconds=n),
                registration_id=reg,
                learning_instance_id=li,
                user_id=user,
                role=role,
            )
        )
        if role == "learner":
            p.row(li, reg, GOAL_OF[li], _row(GOAL_OF[li], reg))
    await RedisProjector(redis).write(p)
    await redis.aclose()


def seed_world(redis_url: str, *, cluster: bool = False) -> None:
    asyncio.run(seed(redis_url, cluster))


def build_app(
    redis_url: str,
    bootstrap: str | None,
    topic_prefix: str,
    *,
    cluster: bool = False,
    **app_kw: object,
) -> Starlette:
    """The real app over real Redis (one server or a Redis Cluster; and the
    real broker, when given)."""
    redis = redis_client(redis_url, cluster=cluster)
    sink = None
    closers: list[object] = [redis.aclose]
    if bootstrap is not None:
        settings = Settings(broker_profile="kafka", topic_prefix=topic_prefix)
        asyncio.run(ensure_topics(settings, bootstrap))
        sink = KafkaEventSink(
            bootstrap,
            profile_for(settings),
            TopicNames(topic_prefix),
            ack_timeout_s=float(app_kw.pop("ack_timeout_s", 10.0)),  # type: ignore[arg-type]
            retry_after_s=7,
        )
        closers.insert(0, sink.stop)
    hub = ChangeHub(redis_client(redis_url, cluster=cluster))
    closers.insert(0, hub.close)
    # Webhook subscriptions on the same Redis; tests send to loopback.
    app_kw.setdefault("webhooks", RedisWebhookStore(redis))
    app_kw.setdefault("allow_private_webhook_urls", True)
    return create_app(
        RedisPageStore(redis),
        authenticator=BearerAuthenticator(verifier_from_settings(SETTINGS)),
        facts=RedisFactStore(redis),
        sink=sink,
        on_shutdown=closers,
        hub=hub,
        views=RedisViewStore(redis),
        **app_kw,  # type: ignore[arg-type]
    )


@contextmanager
def api_client(
    redis_url: str,
    bootstrap: str | None,
    topic_prefix: str,
    *,
    cluster: bool = False,
    **app_kw: object,
) -> Iterator[TestClient]:
    """A TestClient over :func:`build_app` (lifespan included)."""
    app = build_app(redis_url, bootstrap, topic_prefix, cluster=cluster, **app_kw)
    with TestClient(app) as client:
        yield client
