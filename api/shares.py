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

import functools
from collections.abc import Callable

from api.errors import TooManyRequests

__all__ = ["Counts", "PartnerShare", "once"]


class Counts:
    """How many each key holds; a key back at zero is dropped."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    def __getitem__(self, key: str) -> int:
        return self._held.get(key, 0)

    def add(self, key: str) -> None:
        self._held[key] = self._held.get(key, 0) + 1

    def remove(self, key: str) -> None:
        left = self._held[key] - 1
        if left:
            self._held[key] = left
        else:
            del self._held[key]


def once(release: Callable[[], None]) -> Callable[[], None]:
    """``release`` made idempotent: only the first call runs it."""
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            release()

    return run


class PartnerShare:
    """At most ``limit`` held at once per partner."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self._held = Counts()

    def held(self, partner: str) -> int:
        return self._held[partner]

    def acquire(self, partner: str) -> Callable[[], None]:
        """Take one or raise 429; returns the (idempotent) release."""
        held = self._held[partner]
        if held >= self.limit:
            raise TooManyRequests(
                f"this partner already has {held} {self.what} in progress on this "
                "server, its share",
                details={"limit": self.limit, "scope": "partner"},
                code="too_many_requests",
            )
        self._held.add(partner)
        return once(functools.partial(self._held.remove, partner))
