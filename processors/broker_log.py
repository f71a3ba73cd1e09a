"""The rule that tells a broker which lost records from one that did not.

A Kafka partition's end offset never decreases: appends raise it, retention
and compaction remove records from the *start* or the middle, never the end.
It goes down only when records the broker had acknowledged are gone: a broker
whose disks were lost restarted empty, a topic was deleted and created again,
an unclean leader election, a restore of an older disk.
So a partition is *lost* when its end offset now is below the highest end
offset seen before; a partition or topic that no longer exists counts as end 0.

The recorded and the current ends must be the true ends, measured the same
way: the broker self-check (infra/broker.py) refuses a broker that misreports
them.

Why end offsets and not the alternatives: the consumer group's committed
offsets vanish with the broker too, so their absence also looks like a first
start; the worker's local store knows changelog offsets only for partitions it
held and only while its folder survives; an explicit "epoch" record on the
broker would need a writer of its own and a topic nobody deletes. End offsets
of the topics the workers read and write, recorded outside the broker (Redis),
cover every partition, survive worker restarts and wiped folders, and cost one
ListOffsets request per check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from schemas.broker_status import LostPartition

__all__ = ["field_name", "lost_partitions", "parse_field"]

TopicPartition = tuple[str, int]


def field_name(topic: str, partition: int) -> str:
    """``<topic>:<partition>``: Kafka topic names have no ``:``."""
    return f"{topic}:{partition}"


def parse_field(field: str) -> TopicPartition | None:
    """The topic and partition of a :func:`field_name`, else ``None``."""
    topic, sep, partition = field.rpartition(":")
    if not sep or not topic or not partition.isdigit():
        return None
    return topic, int(partition)


def lost_partitions(
    seen: Mapping[TopicPartition, int],
    now: Mapping[TopicPartition, int],
    *,
    topics: Iterable[str] | None = None,
) -> list[LostPartition]:
    """Partitions (of ``topics``, default all) whose end offset ``now`` is below
    the highest end offset ``seen``; a partition missing from ``now`` has end 0.
    Sorted by topic and partition."""
    wanted = None if topics is None else set(topics)
    lost = [
        LostPartition(topic=topic, partition=partition, seen=before, end=after)
        for (topic, partition), before in seen.items()
        if (wanted is None or topic in wanted)
        and (after := now.get((topic, partition), 0)) < before
    ]
    return sorted(lost, key=lambda p: (p.topic, p.partition))
