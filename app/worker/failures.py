"""Every kind of failure the worker meets, and the one action each gets: dead
letter, retry with backoff, or crash with an exit code.

docs/reliability.md, "Failures and what each gets", has the table (tested in
tests/unit/test_failures.py). A crash is
:func:`app.worker.faust_corrections.exit_policy.exit_process`: nothing more is acked,
and the restart reads every record not yet committed; a bug must not quietly
dead-letter all traffic (:class:`DomainBug`).
"""

from __future__ import annotations

import time
from collections import deque

from app.worker.faust_corrections.exit_policy import WorkerExit
from infra.redis_client import transient_redis_error

__all__ = [
    "INTERNAL_ERROR_WINDOW_S",
    "MAX_INTERNAL_ERRORS",
    "DomainBug",
    "InternalErrors",
    "transient_redis_error",
]

#: Internal errors (dead-lettered) tolerated within the window; one more
#: crashes the worker.
MAX_INTERNAL_ERRORS = 10
INTERNAL_ERROR_WINDOW_S = 60.0


class DomainBug(WorkerExit):
    """The domain code failed on too many records in a short time: a bug
    that would otherwise dead-letter the traffic."""


class InternalErrors:
    """Counts the records the domain code failed on; past the threshold,
    :meth:`add` raises :class:`DomainBug`."""

    def __init__(
        self,
        limit: int = MAX_INTERNAL_ERRORS,
        window_s: float = INTERNAL_ERROR_WINDOW_S,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._at: deque[float] = deque()

    def add(self, count: int, now: float | None = None) -> None:
        """``count`` more records failed (a batch's); raise past the limit."""
        if count <= 0:
            return
        now = time.monotonic() if now is None else now
        at = self._at
        at.extend([now] * count)
        while at and at[0] <= now - self.window_s:
            at.popleft()
        if len(at) > self.limit:
            raise DomainBug(
                f"{len(at)} records failed in the domain code within "
                f"{self.window_s:.0f} s (more than {self.limit}): a bug; "
                "see the dead letters' 'internal error' reasons"
            )
