"""Catalog records the follower refused, dead-lettered once per deployment.

Every worker's follower reads the whole catalog topic and refuses the same
records (invalid, or refused by ownership). Only the worker that holds
partition 0 of the registration-events topic sends their dead letters: its
follower's consumer commits how far that went under the group id
``<app-id>-catalog-dead-letters``, so the next holder continues there. A
record is dead-lettered at least once: after a crash between the send and the
commit, or while two workers both think they hold partition 0 during a
rebalance, it may be sent twice (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.worker.catalog_follower import CatalogFollower
from app.worker.outbox import Outbox, dead_letter

__all__ = ["CatalogDeadLetters", "duty_group"]

log = logging.getLogger(__name__)


def duty_group(app_id: str) -> str:
    """The group id under which the duty's position is committed."""
    return f"{app_id}-catalog-dead-letters"


class CatalogDeadLetters:
    """Sends the follower's refused records' dead letters while this worker
    holds the duty, and commits how far it got."""

    def __init__(
        self,
        follower: CatalogFollower,
        outbox: Outbox,
        *,
        holds_duty: Callable[[], bool],
        previous_position: Callable[[], Awaitable[dict[int, int]]] | None = None,
    ) -> None:
        self.follower = follower
        self.outbox = outbox
        self._holds_duty = holds_duty
        self._previous_position = previous_position
        #: The duty's committed position while this worker holds it (None:
        #: not held, read it again when it is).
        self._committed: dict[int, int] | None = None
        self.sent = 0

    async def run_once(self) -> int:
        """Dead-letter what was refused since the committed position and
        commit the follower's position; returns how many were sent."""
        follower = self.follower
        if not self._holds_duty():
            self._committed = None
            if follower.refused({}, follower.positions()):
                # Another worker sends them: keep only what it has not.
                follower.forget_refused(await self._read_committed())
            return 0
        if not follower.ready.is_set():
            # Before the follower has read to the end it saw at start, its
            # positions may be behind what the duty committed.
            return 0
        if self._committed is None:
            self._committed = await self._read_committed()
            log.info("catalog dead-letter duty taken at %s", self._committed)
        committed = self._committed
        # The committed position never goes back: records below it were
        # dead-lettered already.
        upto = {
            p: max(offset, committed.get(p, 0))
            for p, offset in follower.positions().items()
        }
        refused = follower.refused(committed, upto)
        if refused:
            await self.outbox.send_dead_letters(
                [dead_letter(record, reason) for record, reason in refused]
            )
            self.sent += len(refused)
        if upto != self._committed:
            await follower.commit(upto)
            self._committed = upto
        follower.forget_refused(upto)
        return len(refused)

    async def _read_committed(self) -> dict[int, int]:
        committed = await self.follower.committed()
        if any(offset is None for offset in committed.values()):
            previous = (
                await self._previous_position() if self._previous_position else {}
            )
            return {
                p: offset if offset is not None else previous.get(p, 0)
                for p, offset in committed.items()
            }
        return {p: offset for p, offset in committed.items() if offset is not None}


async def agent_position(
    bootstrap: str,
    group_id: str,
    topic: str,
    client_kwargs: Mapping[str, object] | None = None,
) -> dict[int, int]:
    """Where the catalog agent of releases before this one got to: the worker
    group's committed offsets of the catalog topic (empty: none). The duty
    starts there when it has never committed, so an upgrade does not send
    every earlier dead letter again."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(client_kwargs or {}))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if isinstance(tp, TopicPartition) and tp.topic == topic and meta.offset >= 0
    }
