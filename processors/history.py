"""Each learner's timeline on each goal: where its status and progress were when.

A registration's state keeps, per goal, a bounded list of points
``(occurred_at in µs, status, progress, work remaining)``, oldest first
(``RegistrationState.history``), so the worker's changelog holds it and
``mastery rebuild`` serves the same timelines as the worker
(docs/read-model.md, "History"). The batch fold adds the points
(processors/batch.py), event by event, whatever the batching:

- a point when a learner registers (each goal's first row), and at every
  status change (processors/transitions.py decides the changes);
- otherwise, for a goal an applied attempt can change, a point when the
  attempt's ``occurred_at`` is at least :attr:`HistoryPolicy.interval_us`
  after the goal's last point: at most one per interval of the learner's own
  time, which a replay reproduces;
- a point's progress and work remaining are the row's, computed with the
  exact forecast (never a provisional one), so they do not depend on what a
  worker had cached;
- past :attr:`HistoryPolicy.max_points`, one interior point is dropped
  (:func:`appended`): the one closest in time to the point before it, points
  where the status did not change first. The first and the newest points
  always stay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import orjson

from schemas.transitions import GOAL_STATUSES

__all__ = [
    "DEFAULT_HISTORY",
    "MAX_POINTS",
    "HistoryPolicy",
    "Point",
    "appended",
    "due",
    "point_of",
    "points_json",
]

#: Points kept per registration and goal.
MAX_POINTS = 32

#: ``(occurred_at µs since the epoch, index in GOAL_STATUSES, progress,
#: work_remaining)``
Point = tuple[int, int, float, int]

_STATUS_INDEX: dict[str, int] = {status: i for i, status in enumerate(GOAL_STATUSES)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """When a point is added, and how many are kept."""

    interval_us: int = 3600 * 1_000_000
    max_points: int = MAX_POINTS

    def __post_init__(self) -> None:
        if self.interval_us < 0:
            raise ValueError("the history interval is >= 0")
        if self.max_points < 2:
            raise ValueError("a timeline keeps at least 2 points")


DEFAULT_HISTORY = HistoryPolicy()


def due(
    points: Sequence[Point], at_us: int, status_changed: bool, policy: HistoryPolicy
) -> bool:
    """Is a point due for an event at ``at_us`` that can change the goal?"""
    if not points or status_changed:
        return True
    return at_us - points[-1][0] >= policy.interval_us


def point_of(row: Mapping[str, object], at_us: int) -> Point:
    """The point of a row (processors.goals.evaluate) at ``at_us``."""
    progress = row["progress"]
    remaining = row["work_remaining"]
    assert isinstance(progress, float | int) and isinstance(remaining, int)
    return (at_us, _STATUS_INDEX[str(row["status"])], float(progress), remaining)


def appended(
    points: tuple[Point, ...], point: Point, max_points: int
) -> tuple[Point, ...]:
    """``points`` with ``point`` added, thinned to ``max_points``."""
    out = [*points, point]
    while len(out) > max_points:
        best = 1
        best_key: tuple[bool, int] | None = None
        for i in range(1, len(out) - 1):
            key = (out[i][1] != out[i - 1][1], out[i][0] - out[i - 1][0])
            if best_key is None or key < best_key:
                best, best_key = i, key
        del out[best]
    return tuple(out)


def points_json(points: Sequence[Point]) -> bytes:
    """The timeline as the API serves it: ``[{"at", "status", "progress",
    "work_remaining"}, ...]``, oldest first."""
    return b"[" + b",".join(map(_point_json, points)) + b"]"


@lru_cache(maxsize=1 << 16)
def _point_json(point: Point) -> bytes:
    # A timeline is written again whole when a point is added: its older
    # points' JSON is remembered (formatting a time is most of the cost).
    at, status, progress, remaining = point
    return orjson.dumps(
        {
            "at": (_EPOCH + timedelta(microseconds=at)).isoformat(
                timespec="microseconds"
            ),
            "status": GOAL_STATUSES[status],
            "progress": progress,
            "work_remaining": remaining,
        }
    )
