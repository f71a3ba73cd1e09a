"""A correction of aiokafka's OffsetFetch: a group-level error is not "no
committed offset".

aiokafka reads only the per-partition error codes of an OffsetFetch answer,
so a former coordinator's top-level ``NOT_COORDINATOR`` (KIP-88) read as "no
committed offset": the skip guard then restarted healthy workers, and a
consumer would fall back to ``auto_offset_reset``. The copy raises the
top-level error as aiokafka raises the same code per partition, so it is
retried after a new coordinator lookup. How it was found, and the draft for
upstream: docs/upstream/aiokafka-offset-fetch-group-error.md.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from aiokafka import errors as Errors
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.structs import OffsetAndMetadata, TopicPartition

__all__ = ["checked_fetch_commit_offsets", "install"]

log = logging.getLogger(__name__)

#: aiokafka's "no committed offset" (aiokafka.consumer.group_coordinator).
UNKNOWN_OFFSET = -1

#: aiokafka's own method, kept for tests/switches/without.py.
ORIGINAL = GroupCoordinator._do_fetch_commit_offsets

#: Top-level codes answered by a broker that is not (or not yet) the group's
#: coordinator: mark it dead, look it up again and retry.
_COORDINATOR_MOVED = (
    Errors.NotCoordinatorForGroupError,
    Errors.GroupCoordinatorNotAvailableError,
)


def raise_group_error(coordinator: Any, response: Any) -> None:
    """Raise the group-level error of an OffsetFetch ``response`` (v2+), if any."""
    error_type = Errors.for_code(getattr(response, "error_code", 0))
    if error_type is Errors.NoError:
        return
    log.info(
        "OffsetFetch for group %s answered %s by node %s; retrying",
        coordinator.group_id,
        error_type.__name__,
        coordinator.coordinator_id,
    )
    if error_type in _COORDINATOR_MOVED:
        coordinator.coordinator_dead()
        raise error_type()
    if error_type is Errors.GroupLoadInProgressError:
        raise error_type()
    if error_type is Errors.GroupAuthorizationFailedError:
        raise error_type(coordinator.group_id)
    raise Errors.KafkaError(repr(error_type()))


async def checked_fetch_commit_offsets(
    self: GroupCoordinator, partitions: Any
) -> dict[TopicPartition, OffsetAndMetadata]:
    """aiokafka 0.14's ``GroupCoordinator._do_fetch_commit_offsets``, with
    the group-level error checked before the partitions (module docstring)."""
    partitions_by_topic: dict[str, list[int]] = collections.defaultdict(list)
    for tp in partitions:
        partitions_by_topic[tp.topic].append(tp.partition)
    request = OffsetFetchRequest(self.group_id, list(partitions_by_topic.items()))
    response = await self._send_req(request)
    raise_group_error(self, response)  # the line aiokafka lacks
    offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    for topic, topic_partitions in response.topics:
        for partition, offset, metadata, error_code in topic_partitions:
            tp = TopicPartition(topic, partition)
            error_type = Errors.for_code(error_code)
            if error_type is not Errors.NoError:
                if error_type is Errors.GroupLoadInProgressError:
                    raise error_type()
                if error_type is Errors.NotCoordinatorForGroupError:
                    self.coordinator_dead()
                    raise error_type()
                if error_type is Errors.UnknownTopicOrPartitionError:
                    log.warning("OffsetFetchRequest -- unknown topic %s", topic)
                    continue
                if error_type is Errors.GroupAuthorizationFailedError:
                    raise error_type(self.group_id)
                log.error("Unknown error fetching offsets for %s: %s", tp, error_type())
                raise Errors.KafkaError(repr(error_type()))
            if offset != UNKNOWN_OFFSET:  # -1: no committed offset
                offsets[tp] = OffsetAndMetadata(offset, metadata)
    return offsets


def install() -> None:
    """Put the checked method on aiokafka's GroupCoordinator (every consumer
    of the process: Faust's, the guards' probes, the broker checks)."""
    GroupCoordinator._do_fetch_commit_offsets = checked_fetch_commit_offsets
