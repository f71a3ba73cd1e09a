"""How large a definition may be: every collection a partner can send is
bounded where it enters (the ingest API answers 400 naming the field and the
limit; the worker dead-letters an event over a limit that was produced to
Kafka directly). docs/ingest.md, "Limits", lists them with the byte bounds
they give rows, pages and change-stream entries.

A goal with 60,000 topics was accepted before these existed: each of its rows
was 4.4 MB, a page of 20 learners 88 MB, and other partners' reads slowed
from 3 ms to 1.7 s.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "MAX_MEMBERS_PER_TOPIC",
    "MAX_OBJECTIVES_PER_MODULE",
    "MAX_PAGE_BYTES",
    "MAX_ROW_BYTES",
    "MAX_SNAPSHOT_BYTES",
    "MAX_TARGETS_PER_GOAL",
    "MAX_TOPICS_PER_GOAL",
    "row_bytes_bound",
]

#: targets of one goal (learning objectives or modules)
MAX_TARGETS_PER_GOAL = 200
#: topics of one goal; a topic groups targets for the work-remaining forecast
MAX_TOPICS_PER_GOAL = 50
#: members of one topic (each a target of the goal)
MAX_MEMBERS_PER_TOPIC = MAX_TARGETS_PER_GOAL
#: learning objectives a module is tagged with (and so BKT parameter sets)
MAX_OBJECTIVES_PER_MODULE = 100

#: A goal's row (one learner's status_and_progress item, as stored in Redis,
#: served in pages and carried by each change-stream entry) at its largest.
#: A definition whose rows could be larger is refused (:func:`row_bytes_bound`).
MAX_ROW_BYTES = 64 * 1024
#: A status-and-progress page's rows; a larger page is a 400 asking for fewer
#: registrations_per_page or goal_ids (at most 100 x 50 rows of MAX_ROW_BYTES
#: could otherwise be 320 MB).
MAX_PAGE_BYTES = 8 * 1024 * 1024
#: A live stream's snapshot (every learner of the class, no paging).
MAX_SNAPSHOT_BYTES = 32 * 1024 * 1024

# The JSON around one id in a row, at its longest: a target
# {"module_id":"…","status":"complete_max_work","progress":0.12345678901234568},
# a topic {"topic_id":"…","min_work_remaining":100000,
# "average_work_remaining":100000}, and the goal's own fields with a
# 128-character goal id.
_TARGET_OVERHEAD = 80
_TOPIC_OVERHEAD = 80
_ROW_OVERHEAD = 400


def row_bytes_bound(target_ids: Iterable[str], topic_ids: Iterable[str]) -> int:
    """The largest a row of a goal with these targets and topics can be (UTF-8
    bytes; orjson writes non-ASCII as itself)."""
    return (
        _ROW_OVERHEAD
        + sum(_TARGET_OVERHEAD + len(t.encode()) for t in target_ids)
        + sum(_TOPIC_OVERHEAD + len(t.encode()) for t in topic_ids)
    )
