"""Our murmur2 partitioner is Kafka's (aiokafka's DefaultPartitioner)."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from processors.partitioning import kafka_partition, murmur2


def test_murmur2_and_partition_equal_aiokafkas_on_random_keys() -> None:
    rng = random.Random(7)
    partitioner = DefaultPartitioner()
    for length in [*range(0, 12), 36, 100]:
        for _ in range(50):
            key = bytes(rng.randrange(256) for _ in range(length))
            assert murmur2(key) == aiokafka_murmur2(key) & 0xFFFFFFFF
            for n in (1, 3, 4, 7, 64):
                parts = list(range(n))
                assert kafka_partition(key, n) == partitioner(key, parts, parts)
