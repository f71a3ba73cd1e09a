"""The ingest endpoints' port to the broker: every event acknowledged, or 503.

The API never writes state itself: it produces events, and the worker folds
them. :class:`KafkaEventSink` returns only when the broker acknowledged every
event of the request (``acks=all``); otherwise it raises
:class:`api.errors.BrokerUnavailable`, which the app answers with ``503`` and
``Retry-After``. A 503 does not prove an event was *not* stored (an ack can be
lost after the write), which is why retries are made idempotent by ids chosen
by the client (docs/ingest.md).

An event larger than its topic's record limit can never be stored, so it is
not a 503 (a client would retry it for ever) but a ``413`` naming the limit:
:class:`RecordLimits` reads each topic's ``max.message.bytes`` from the
broker (a topic's own config, else the broker's default) and the sink checks
every event against it before producing any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from api.errors import BrokerUnavailable, PayloadTooLarge, redact_addresses
from infra.broker import BrokerProfile
from infra.kafka_security import refusal_reason
from infra.producer import EventProducer
from infra.topic_names import AnyEvent, TopicNames
from schemas.events import encode_event

__all__ = ["EventSink", "KafkaEventSink", "RecordLimits"]

log = logging.getLogger(__name__)

#: aiokafka's producer refuses a record larger than its max_request_size
#: (1 MiB by default, kept): the limit is the smaller of this and the topic's.
PRODUCER_MAX_REQUEST_BYTES = 1_048_576
#: A record batch of one record: the batch header (61 bytes) and the record's
#: own varints and attributes, rounded up.
RECORD_OVERHEAD_BYTES = 100


class RecordLimits:
    """Each topic's ``max.message.bytes`` as the broker reports it, read once
    per ``ttl_s`` per topic (an operator may change it at run time)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_kwargs: Mapping[str, Any] | None = None,
        ttl_s: float = 60.0,
    ) -> None:
        self._bootstrap = bootstrap
        self._client_kwargs = dict(client_kwargs or {})
        self._ttl_s = ttl_s
        self._known: dict[str, tuple[float, int]] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()

    async def limit(self, topic: str) -> int:
        """The largest record (key, value and batch overhead) ``topic`` takes.

        When the broker cannot say (unreachable, or no DescribeConfigs right),
        the producer's own limit, asked again after a few seconds: the send
        that follows then fails or succeeds as it would have without this.
        """
        loop = asyncio.get_running_loop()
        known = self._known.get(topic)
        if known is not None and loop.time() < known[0]:
            return known[1]
        try:
            async with asyncio.timeout(5.0):
                value = await self._read(topic)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("cannot read max.message.bytes of %s: %r", topic, exc)
            await self.close()
            self._known[topic] = (loop.time() + 5.0, PRODUCER_MAX_REQUEST_BYTES)
            return PRODUCER_MAX_REQUEST_BYTES
        limit = min(value, PRODUCER_MAX_REQUEST_BYTES)
        self._known[topic] = (loop.time() + self._ttl_s, limit)
        return limit

    async def _read(self, topic: str) -> int:
        async with self._lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self._bootstrap,
                    request_timeout_ms=5000,
                    **self._client_kwargs,
                )
                try:
                    await admin.start()
                except BaseException:
                    with contextlib.suppress(KafkaError, OSError, RuntimeError):
                        await admin.close()
                    raise
                self._admin = admin
            responses = await self._admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
        for response in responses:
            for resource in response.to_object()["resources"]:
                if resource["error_code"] != 0:
                    raise KafkaError(
                        f"describe_configs({topic}): error {resource['error_code']}"
                    )
                for entry in resource["config_entries"]:
                    if entry["config_names"] == "max.message.bytes":
                        return int(entry["config_value"])
        raise KafkaError(f"the broker reported no max.message.bytes of {topic}")

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(KafkaError, OSError, RuntimeError):
                await admin.close()


class EventSink(Protocol):
    """Stores events in order; returns once all are stored, else raises
    :class:`BrokerUnavailable` (``details.stored``: indexes that were acked)."""

    async def send(self, events: Sequence[AnyEvent]) -> None: ...


class KafkaEventSink:
    """:class:`EventSink` over :class:`infra.producer.EventProducer`.

    The producer is started on first use (and again after a failed start), so
    the API serves reads while the broker is down and ingest recovers by itself.
    """

    def __init__(
        self,
        bootstrap: str,
        profile: BrokerProfile,
        topics: TopicNames,
        *,
        ack_timeout_s: float = 10.0,
        retry_after_s: int = 5,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._client_kwargs = dict(client_kwargs or {})
        self._profile = profile
        self._topics = topics
        self._ack_timeout_s = ack_timeout_s
        self._retry_after_s = retry_after_s
        self._producer: EventProducer | None = None
        self._lock = asyncio.Lock()
        self._limits = RecordLimits(bootstrap, client_kwargs=client_kwargs)

    def _unavailable(self, reason: str, stored: list[int]) -> BrokerUnavailable:
        return BrokerUnavailable(
            "the broker did not acknowledge the events; retry later (ids you "
            "chose make the retry idempotent)",
            details={"reason": redact_addresses(reason), "stored": stored},
            retry_after_s=self._retry_after_s,
        )

    async def _started(self) -> EventProducer:
        async with self._lock:
            if self._producer is None:
                producer = EventProducer(
                    self._bootstrap,
                    self._profile,
                    self._topics,
                    client_kwargs=self._client_kwargs,
                )
                try:
                    async with asyncio.timeout(self._ack_timeout_s):
                        await producer.start()
                except (KafkaError, OSError, TimeoutError) as exc:
                    with contextlib.suppress(KafkaError, OSError, RuntimeError):
                        await producer.stop()
                    refused = await refusal_reason(
                        exc, self._bootstrap, self._client_kwargs, timeout_s=2.0
                    )
                    raise self._unavailable(
                        f"cannot connect: {refused or repr(exc)}", stored=[]
                    ) from exc
                self._producer = producer
            return self._producer

    async def _check_sizes(self, events: Sequence[AnyEvent]) -> None:
        """413 before anything is produced when an event cannot fit its topic."""
        for index, event in enumerate(events):
            topic, key = self._topics.route(event)
            size = len(encode_event(event)) + len(key.encode()) + RECORD_OVERHEAD_BYTES
            limit = await self._limits.limit(topic)
            if size > limit:
                raise _too_large(index, size, limit)

    async def send(self, events: Sequence[AnyEvent]) -> None:
        if not events:
            return
        await self._check_sizes(events)
        producer = await self._started()
        futures: list[asyncio.Future[object]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ack_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                # Queued one after another: events of one registration keep
                # their request order on its partition.
                for event in events:
                    future = await producer.send(event)
                    future.add_done_callback(_retrieve)
                    futures.append(future)
        except MessageSizeTooLargeError as exc:
            # The producer's own check (max_request_size): never storable.
            raise _too_large(
                len(futures),
                None,
                PRODUCER_MAX_REQUEST_BYTES,
                stored=self._acked(futures),
            ) from exc
        except (KafkaError, OSError, TimeoutError) as exc:
            raise self._unavailable(repr(exc), self._acked(futures)) from exc
        if futures:
            _, pending = await asyncio.wait(
                futures, timeout=max(0.0, deadline - loop.time())
            )
            if pending:
                raise self._unavailable(
                    "timed out waiting for acks", self._acked(futures)
                )
        failed = [f for f in futures if f.cancelled() or f.exception() is not None]
        if failed:
            reason = (
                "cancelled" if failed[0].cancelled() else repr(failed[0].exception())
            )
            raise self._unavailable(reason, self._acked(futures))

    @staticmethod
    def _acked(futures: list[asyncio.Future[object]]) -> list[int]:
        return [
            i
            for i, f in enumerate(futures)
            if f.done() and not f.cancelled() and f.exception() is None
        ]

    async def stop(self) -> None:
        """Flush and stop; bounded, so a dead broker cannot hold up shutdown."""
        await self._limits.close()
        async with self._lock:
            if self._producer is not None:
                with contextlib.suppress(KafkaError, OSError, TimeoutError):
                    async with asyncio.timeout(self._ack_timeout_s):
                        await self._producer.stop()
                self._producer = None


def _too_large(
    index: int, size: int | None, limit: int, stored: list[int] | None = None
) -> PayloadTooLarge:
    what = f"{size} bytes" if size is not None else "too large"
    return PayloadTooLarge(
        f"event {index} of the request is {what} as a Kafka record, more than "
        f"its topic takes ({limit} bytes, the topic's max.message.bytes); it "
        "can never be stored: make it smaller",
        details={
            "field": "body",
            "index": index,
            "size": size,
            "limit": limit,
            "stored": stored or [],
        },
    )


def _retrieve(future: asyncio.Future[object]) -> None:
    # Failures are reported through BrokerUnavailable (or arrive after the
    # request gave up); mark them retrieved so asyncio does not log them again.
    if not future.cancelled():
        future.exception()
