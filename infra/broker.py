"""The broker profile, the offsets self-check, and topic creation.

mastery-stream runs on Apache Kafka (or a managed Kafka): dev, tests, CI and
the benchmarks run Apache Kafka 4.4 in KRaft mode (app/devstack/embedded_kafka.py).
:class:`BrokerProfile` holds the client settings the worker and our producers
use with it. :func:`self_check` produces three records in one batch and asks
for the end offset: a broker that answers anything but "base + 3" would make
Faust's changelog recovery stop short and lose updates, so the worker and
``mastery rebuild`` refuse to run on it (:class:`BrokerMisreportsOffsets`).
(Tansu 0.6, the embedded broker of earlier versions, is such a broker; its
workarounds were removed with it: docs/operations.md, "Running on Kafka".)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from infra.kafka_security import kafka_client_kwargs
from infra.settings import Settings
from infra.topic_names import TopicNames

__all__ = [
    "KAFKA",
    "BrokerCheck",
    "BrokerMisreportsOffsets",
    "BrokerProfile",
    "create_topics",
    "end_offsets",
    "ensure_topics",
    "profile_for",
    "self_check",
    "topic_partitions",
    "verify_broker",
]

log = logging.getLogger(__name__)


class BrokerMisreportsOffsets(RuntimeError):
    """The broker's end offsets are wrong: table recovery would lose updates."""


@dataclass(frozen=True, slots=True)
class BrokerProfile:
    """Client settings for the broker."""

    name: Literal["kafka"]
    session_timeout_s: float
    #: The worker consumer's fetch wait (Faust hard-codes 1500 ms;
    #: app/worker/faust_corrections/transport.py). aiokafka sends one fetch per
    #: broker at a time, leaving out partitions whose records are still
    #: buffered: a fetch of only idle partitions (standby changelogs, the
    #: catalog) then holds new records of the busy ones for the whole wait.
    #: 1500 ms gave a freshness p99 of 1.7 s in `make bench`; 50 ms costs
    #: an idle worker 20 small requests a second (docs/performance.md).
    fetch_max_wait_ms: int = 50
    #: Faust standby replicas of the state table: each worker also follows
    #: this many other workers' changelog partitions, for a faster failover.
    standby_replicas: int = 1

    def faust_settings(self) -> dict[str, Any]:
        """Keyword arguments for ``faust.App``."""
        return {
            "broker_session_timeout": self.session_timeout_s,
            "broker_heartbeat_interval": min(3.0, self.session_timeout_s / 3),
            # Exactness comes from idempotent state (attempt ids and the
            # write-back checkpoint, docs/reliability.md), not transactions.
            "processing_guarantee": "at_least_once",
            "table_standby_replicas": self.standby_replicas,
        }

    def producer_settings(self) -> dict[str, Any]:
        """Keyword arguments for an ``AIOKafkaProducer`` of ours."""
        return {"linger_ms": 5, "acks": "all"}


#: A worker that dies without leaving the group holds its partitions for the
#: session timeout: 30 s (Faust's default is 60, Kafka's 45) bounds how long
#: its rows stand still before another worker takes over.
KAFKA = BrokerProfile(name="kafka", session_timeout_s=30.0)


def profile_for(settings: Settings) -> BrokerProfile:
    """The profile, with explicit settings applied."""
    return BrokerProfile(
        name="kafka",
        standby_replicas=KAFKA.standby_replicas
        if settings.table_standby_replicas is None
        else settings.table_standby_replicas,
        session_timeout_s=settings.broker_session_timeout_s or KAFKA.session_timeout_s,
        fetch_max_wait_ms=settings.fetch_max_wait_ms or KAFKA.fetch_max_wait_ms,
    )


@dataclass(frozen=True, slots=True)
class BrokerCheck:
    """Result of producing three records in one batch and asking for the end."""

    expected_end: int
    reported_end: int

    @property
    def reports_offsets_correctly(self) -> bool:
        # Tansu 0.6 reported *less* than the true end. More means another
        # writer appended after us: workers starting together all run the
        # check on the one self-check partition.
        return self.reported_end >= self.expected_end

    def describe(self) -> str:
        if self.reports_offsets_correctly:
            return (
                f"broker self-check: end offsets are correct "
                f"(3 records in one batch -> end {self.reported_end})"
            )
        return (
            f"broker self-check: end offsets are WRONG (3 records in one batch -> "
            f"reported end {self.reported_end}, true end {self.expected_end}): "
            "Faust's table recovery would stop short and lose updates; run on "
            "Apache Kafka (docs/operations.md)"
        )


async def end_offsets(
    consumer: AIOKafkaConsumer,
    tps: Sequence[TopicPartition],
    *,
    timeout_s: float = 10.0,
) -> dict[TopicPartition, int]:
    """End offsets of ``tps`` as the broker reports them; :class:`TimeoutError`
    when it does not answer within ``timeout_s`` (the broker watch: "cannot
    tell")."""
    async with asyncio.timeout(timeout_s):
        return dict(await consumer.end_offsets(list(tps)))


async def topic_partitions(
    bootstrap: str, topic: str, client_kwargs: Mapping[str, Any] | None = None
) -> set[int]:
    """The partitions of ``topic`` (empty: no such topic).

    A consumer's ``partitions_for_topic`` knows only topics it has metadata
    for, and a Kafka 4 broker answers aiokafka's bootstrap metadata request
    (topics: none) with no topic at all. Every topic is described, not the
    named one: naming it could make a broker that auto-creates topics create
    it.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(client_kwargs or {}))
    await admin.start()
    try:
        for described in await admin.describe_topics():
            if described["topic"] == topic and not described["error_code"]:
                return {p["partition"] for p in described["partitions"]}
        return set()
    finally:
        await admin.close()


async def self_check(
    bootstrap: str,
    topics: TopicNames,
    *,
    client_kwargs: Mapping[str, Any] | None = None,
    replication: int = 1,
    attempts: int = 5,
) -> BrokerCheck:
    """Produce 3 records in one batch and compare the broker's end offset.

    Workers starting together check the same partition: another's batch
    appended between our send and our question makes the end larger than
    ours (never smaller, on a correct broker), so such a check is repeated,
    up to ``attempts`` times, after a random pause.
    """
    security = dict(client_kwargs or {})
    await create_topics(
        bootstrap,
        [
            NewTopic(
                topics.selfcheck,
                1,
                replication,
                topic_configs={"min.insync.replicas": "1", "retention.ms": "3600000"},
            )
        ],
        security,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=100, acks="all", **security
    )
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **security)
    await producer.start()
    await consumer.start()
    tp = TopicPartition(topics.selfcheck, 0)

    async def once() -> BrokerCheck:
        batch = producer.create_batch()
        for i in range(3):
            batch.append(key=None, value=b"selfcheck-%d" % i, timestamp=None)
        meta = await (await producer.send_batch(batch, topics.selfcheck, partition=0))
        reported = (await consumer.end_offsets([tp]))[tp]
        # base offset of the batch + its 3 records
        return BrokerCheck(expected_end=meta.offset + 3, reported_end=reported)

    try:
        check = await once()
        for _ in range(attempts - 1):
            if check.reported_end <= check.expected_end:
                break
            await asyncio.sleep(random.uniform(0.05, 0.3))
            check = await once()
        return check
    finally:
        await producer.stop()
        await consumer.stop()


async def verify_broker(settings: Settings, bootstrap: str) -> BrokerCheck:
    """Run the self-check, log its verdict, and refuse a broker that
    misreports end offsets."""
    check = await self_check(
        bootstrap,
        TopicNames(settings.topic_prefix),
        client_kwargs=kafka_client_kwargs(settings),
        replication=settings.topic_replication,
    )
    log.info("%s", check.describe())
    if not check.reports_offsets_correctly:
        raise BrokerMisreportsOffsets(check.describe())
    return check


async def create_topics(
    bootstrap: str,
    new_topics: list[NewTopic],
    client_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Create the topics that do not exist yet (existing ones are left as
    they are)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(client_kwargs or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in new_topics if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def ensure_topics(settings: Settings, bootstrap: str) -> None:
    """Create the system's missing topics as declared (infra/topic_specs.py)
    and verify every one; :class:`infra.topic_specs.TopicSettingsError` for
    a topic whose settings would lose data."""
    from infra.topic_specs import apply_topic_specs

    await apply_topic_specs(settings, bootstrap)
