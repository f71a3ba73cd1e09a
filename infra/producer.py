"""Producing events to Kafka: one producer class for the CLI, demo, tests and bench."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer

from infra.broker import BrokerProfile
from infra.topic_names import AnyEvent, TopicNames
from schemas.events import encode_event

__all__ = ["EventProducer"]


class EventProducer:
    """Routes events to their topic and key; every send is acknowledged.

    ``client_kwargs`` are the connection's security arguments
    (:func:`infra.kafka_security.kafka_client_kwargs`).
    """

    def __init__(
        self,
        bootstrap: str,
        profile: BrokerProfile,
        topics: TopicNames,
        *,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.topics = topics
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            **profile.producer_settings(),
            **(client_kwargs or {}),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send_raw(
        self, topic: str, key: bytes | None, value: bytes
    ) -> asyncio.Future[object]:
        """Queue raw bytes (for tests of bad input); await the result for the ack."""
        fut: asyncio.Future[object] = await self._producer.send(topic, value, key=key)
        return fut

    async def send(self, event: AnyEvent) -> asyncio.Future[object]:
        """Queue one event; await the returned future for the broker's ack."""
        topic, key = self.topics.route(event)
        return await self.send_raw(topic, key.encode(), encode_event(event))

    async def send_all(self, events: Iterable[AnyEvent], *, window: int = 5000) -> int:
        """Send events in order and wait for every ack; returns the count."""
        pending: list[asyncio.Future[object]] = []
        count = 0
        for event in events:
            pending.append(await self.send(event))
            count += 1
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return count
