"""The ingest endpoints' port to the broker: every event acknowledged, or 503.

The API never writes state itself: it produces events, and the worker folds
them. :class:`KafkaEventSink` returns only when the broker acknowledged every
event of the request (``acks=all``); otherwise it raises
:class:`api.errors.BrokerUnavailable`, which the app answers with ``503`` and
``Retry-After``. A 503 does not prove an event was *not* stored (an ack can be
lost after the write), which is why retries are made idempotent by ids chosen
by the client (docs/ingest.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from api.errors import BrokerUnavailable, redact_addresses
from infra.broker import BrokerProfile
from infra.kafka_security import refusal_reason
from infra.producer import EventProducer
from infra.topics import AnyEvent, TopicNames

__all__ = ["EventSink", "KafkaEventSink"]

log = logging.getLogger(__name__)


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

    async def send(self, events: Sequence[AnyEvent]) -> None:
        if not events:
            return
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
        async with self._lock:
            if self._producer is not None:
                with contextlib.suppress(KafkaError, OSError, TimeoutError):
                    async with asyncio.timeout(self._ack_timeout_s):
                        await self._producer.stop()
                self._producer = None


def _retrieve(future: asyncio.Future[object]) -> None:
    # Failures are reported through BrokerUnavailable (or arrive after the
    # request gave up); mark them retrieved so asyncio does not log them again.
    if not future.cancelled():
        future.exception()
