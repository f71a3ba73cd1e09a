"""Reading a whole topic, up to its end offsets, outside any consumer group.

Used by the offline commands (``mastery rebuild``, ``mastery dlq``). End
offsets come from :func:`infra.broker.end_offsets`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.broker import BrokerProfile, end_offsets, topic_partitions

__all__ = ["Record", "read_topic"]


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


async def read_topic(
    bootstrap: str,
    topic: str,
    profile: BrokerProfile,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    fetch_max_wait_ms: int = 100,
    client_kwargs: Mapping[str, Any] | None = None,
) -> AsyncIterator[Record]:
    """Yield every record of every partition present now, then stop.

    ``client_kwargs``: security arguments (:mod:`infra.kafka_security`).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_max_wait_ms,
        **(client_kwargs or {}),
    )
    try:
        # Inside the try: a consumer whose start failed (a refused login) must
        # be stopped too, or aiokafka reports it unclosed after the error line.
        await consumer.start()
        partitions = await topic_partitions(bootstrap, topic, client_kwargs)
        if not partitions:
            return
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await end_offsets(consumer, tps)
        total = sum(ends[tp] - starts[tp] for tp in tps)
        remaining = {tp for tp in tps if ends[tp] > starts[tp]}
        done = 0
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    if r.offset < ends[tp]:
                        done += 1
                        yield Record(topic, tp.partition, r.offset, r.key, r.value)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if on_progress is not None:
                on_progress(done, total)
    finally:
        # aiokafka 0.14's NoGroupCoordinator.close() awaits a task it has just
        # cancelled; one cancelled before its first step (a topic that does not
        # exist returns at once) raises CancelledError out of stop(). One loop
        # iteration lets the task start.
        await asyncio.sleep(0)
        await consumer.stop()
