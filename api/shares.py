"""Each partner's share of a pool one API process shares between partners.

:class:`PartnerShare` counts what a partner holds at once (ingest requests
in flight, each holding a Redis round trip and the broker's producer until
acked; status-and-progress reads, each holding a Redis connection) and
answers ``429`` with ``details.scope`` ``partner`` beyond its share, so one
partner's burst, a stalled broker or a slow Redis cannot take every slot of
the process from the others (docs/operations.md, "Shared pools and each
partner's share").
"""

from __future__ import annotations

from collections.abc import Callable

from api.errors import TooManyRequests

__all__ = ["PartnerShare"]


class PartnerShare:
    """At most ``limit`` held at once per partner."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self._held: dict[str, int] = {}

    def held(self, partner: str) -> int:
        return self._held.get(partner, 0)

    def acquire(self, partner: str) -> Callable[[], None]:
        """Take one or raise 429; returns the (idempotent) release."""
        held = self._held.get(partner, 0)
        if held >= self.limit:
            raise TooManyRequests(
                f"this partner already has {held} {self.what} in progress on this "
                "server, its share",
                details={"limit": self.limit, "scope": "partner"},
                code="too_many_requests",
            )
        self._held[partner] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._held[partner] - 1
            if left:
                self._held[partner] = left
            else:
                del self._held[partner]

        return release
