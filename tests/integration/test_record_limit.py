"""An event larger than its topic's record limit can never be stored: the
ingest API answers 413 with the limit read from the topic's own
``max.message.bytes`` on the real broker, not 503 with Retry-After (which a
client retries for ever)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from starlette.testclient import TestClient

from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis
from infra.topic_names import TopicNames
from tests.integration.auth_world import api_client, bearer, seed_world
from tests.waiting import wait_for_async

pytestmark = pytest.mark.integration

PREFIX = "reclimit"
TOPIC_LIMIT = 3000
ADMIN = bearer("adm1", "p1", ("partner_admin",))


async def _set_record_limit(bootstrap: str, topic: str, limit: int) -> None:
    """Lower the topic's record limit and wait until the broker enforces it
    (a topic config change reaches the log asynchronously)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    topic,
                    configs={"max.message.bytes": str(limit)},
                )
            ]
        )
    finally:
        await admin.close()
    async with AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all") as probe:

        async def refused() -> bool:
            try:
                await probe.send_and_wait(topic, b"p" * (limit + 500), key=b"probe")
            except KafkaError:
                return True  # the limit is in force
            return False

        await wait_for_async(
            refused,
            timeout_s=30,
            interval_s=0.2,
            what=f"the broker to enforce max.message.bytes={limit}",
        )


@pytest.fixture(scope="module")
def client(
    redis_server: EmbeddedRedis, kafka_server: EmbeddedKafka
) -> Iterator[TestClient]:
    seed_world(redis_server.url)
    with api_client(redis_server.url, kafka_server.bootstrap_servers, PREFIX) as c:
        # after api_client created the topics as declared
        asyncio.run(
            _set_record_limit(
                kafka_server.bootstrap_servers, TopicNames(PREFIX).catalog, TOPIC_LIMIT
            )
        )
        c.headers.update(ADMIN)
        yield c


def _goal(targets: int) -> bytes:
    return orjson.dumps(
        {
            "learning_instance_id": "li-a",
            "targets": [
                {"learning_objective_id": f"objective-{i:03d}-" + "x" * 40}
                for i in range(targets)
            ],
        }
    )


def test_a_goal_over_the_topic_s_record_limit_is_a_413_with_the_limit(
    client: TestClient,
) -> None:
    body = _goal(80)  # about 4.6 kB as a record: within schemas/limits.py
    r = client.put(
        "/goals/goal-big", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413, r.text
    assert "retry-after" not in r.headers
    error = r.json()["error"]
    assert error["code"] == "payload_too_large"
    assert error["details"]["limit"] == TOPIC_LIMIT
    assert error["details"]["size"] > TOPIC_LIMIT
    assert error["details"]["stored"] == []


def test_a_goal_within_the_limit_is_accepted(client: TestClient) -> None:
    r = client.put(
        "/goals/goal-small",
        content=_goal(5),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 202, r.text
