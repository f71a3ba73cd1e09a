"""Which partition a key belongs on: Kafka's default (murmur2) partitioner.

The registration-events topic is keyed by registration id, and a
registration's state lives in the partition its key hashes to. A producer
using another partitioner (librdkafka's default is CRC32) or naming a
partition puts records elsewhere; the worker forwards them to the partition
their key belongs on (docs/events.md). Pure Python, the same function as the
Java client's ``Utils.murmur2`` and aiokafka's ``DefaultPartitioner``
(tested against it); memoized, since the keys of a stream repeat.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["kafka_partition", "murmur2"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 as Kafka computes it (seed 0x9747B28C), unsigned 32-bit."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest >= 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@lru_cache(maxsize=1 << 16)
def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
