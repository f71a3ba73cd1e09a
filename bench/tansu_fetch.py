"""How a Tansu fetch slows down with the number of batches in a partition.

Tansu 0.6's in-memory store keeps every produced batch as one object and a
fetch that finds new data lists all of a partition's objects
(``DynoStore::fetch``; infra/broker.py, bug 5). This starts an embedded broker,
fills one partition with one-record batches in steps, and after each step
measures a plain aiokafka tail consumer: the age of 100 records (sent one at
a time, 20 ms apart) when the consumer gets them.

    python -m bench.tansu_fetch            # 0, 2,000, 8,000, 32,000 batches
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from app.embedded import EmbeddedKafka
from infra.broker import create_topics

TOPIC = "tansu-fetch-bench"
PROBES = 100


async def _tail_ages(bootstrap: str, producer: AIOKafkaProducer) -> list[float]:
    tp = TopicPartition(TOPIC, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await asyncio.sleep(0.5)
        ages: list[float] = []

        async def read() -> None:
            while len(ages) < PROBES:
                batches = await consumer.getmany(timeout_ms=1000)
                now = time.time()
                for records in batches.values():
                    ages.extend((now - r.timestamp / 1000) * 1000 for r in records)

        reader = asyncio.ensure_future(read())
        for _ in range(PROBES):
            await producer.send_and_wait(TOPIC, b"probe")
            await asyncio.sleep(0.02)
        await asyncio.wait_for(reader, 30)
        return ages[:PROBES]
    finally:
        await consumer.stop()


async def run(steps: list[int]) -> None:
    with EmbeddedKafka().start() as kafka:
        bootstrap = kafka.bootstrap_servers
        await create_topics(bootstrap, [NewTopic(TOPIC, 1, 1)])
        # max_batch_size 200: every 100-byte record is a batch of its own.
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=0, max_batch_size=200
        )
        await producer.start()
        try:
            batches = 0
            print("| batches in the partition | median age on arrival | p90 |")
            print("| --- | --- | --- |")
            for target in steps:
                while batches < target:
                    for _ in range(200):
                        await producer.send(TOPIC, b"x" * 100)
                    await producer.flush()
                    batches += 200
                ages = sorted(await _tail_ages(bootstrap, producer))
                batches += PROBES
                p90 = ages[int(0.9 * len(ages))]
                print(
                    f"| {target:,} | {statistics.median(ages):.1f} ms | {p90:.1f} ms |",
                    flush=True,
                )
        finally:
            await producer.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--steps",
        default="0,2000,8000,32000",
        help="batch counts to measure at (comma-separated, increasing)",
    )
    args = ap.parse_args()
    asyncio.run(run([int(s) for s in args.steps.split(",")]))


if __name__ == "__main__":
    main()
