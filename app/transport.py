"""Faust's aiokafka transport with a configurable fetch max wait.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. On real
Kafka that only bounds idle polls, but Tansu always waits it out, which made
rows appear ~1 s late. The subclass below sets the consumer's wait from the
broker profile before the consumer starts (aiokafka reads it in ``start()``).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["MasteryApp"]


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            # aiokafka keeps the constructor argument here and builds its
            # Fetcher from it in start(); there is no public setter.
            consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class MasteryApp(faust.App):
    """``faust.App`` whose consumer honours ``fetch_max_wait_ms``."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int | None = None, **kwargs: Any):
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
