"""Faust's aiokafka transport, following the broker profile (app/broker.py).

- Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. On real
  Kafka that only bounds idle polls, but Tansu always waits it out, which made
  rows appear ~1 s late: the consumer's wait comes from the profile instead.
- Faust pauses all streams while its producer buffer holds over 100 records;
  a batch here writes one changelog record per touched registration, so the
  limit is raised.
- Table recovery reads changelogs up to the broker's "highwater" end offsets.
  Under the Tansu profile these are right only because the worker's producer
  writes one record per batch (app/broker.py). Correcting them here instead,
  with a probe consumer started inside Faust's consumer thread during
  recovery, made restarted workers stall: do not.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from app.broker import BrokerProfile

#: Changelog records queued before Faust pauses the streams (Faust: 100).
PRODUCER_BUFFER_MESSAGES = 5000

__all__ = ["MasteryApp"]


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        profile: BrokerProfile | None = getattr(self.app, "profile", None)
        if profile is not None:
            # aiokafka keeps the constructor argument here and builds its
            # Fetcher from it in start(); there is no public setter.
            consumer._fetch_max_wait_ms = profile.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class MasteryApp(faust.App):
    """``faust.App`` whose consumer follows a :class:`BrokerProfile`."""

    def __init__(self, *args: Any, profile: BrokerProfile | None = None, **kwargs: Any):
        self.profile = profile
        super().__init__(*args, **kwargs)

    def _new_producer(self) -> Any:
        producer = super()._new_producer()
        # Table writes queue their changelog records in this buffer; Faust
        # blocks every stream when it holds over 100 (its default). A worker
        # batch writes one record per touched registration, often more than
        # 100 at once: let a whole batch in before the streams wait.
        producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES
        return producer

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
