"""Fan-out of the worker's row changes to the live streams of one API process.

The worker appends every changed row to its learning instance's Redis stream
in the same MULTI/EXEC as the row itself (``infra/read_model/writer.py``). Here one
reader task per learning instance with at least one open stream blocks on
``XREAD`` (a push: it wakes when an entry arrives, there is no polling) and
hands each entry to the subscriptions of that learning instance, so 500 open
streams on 3 classes cost 3 Redis readers, not 500.

Each subscription has a bounded queue. A subscriber that cannot keep up (its
queue is full) is dropped: its queue is emptied and its stream ends, and the
client reconnects with ``Last-Event-ID`` to resume (docs/dashboard.md). Memory
per stream is therefore bounded whatever the client does.

Gap-free hand-over: a subscription starts after a known stream id (the
snapshot's or the client's ``Last-Event-ID``, never past the stream's last
entry: a reader started there would wait for ids nobody has written, and all
subscriptions of the learning instance share it). It is registered with the reader
synchronously, so every entry the reader dispatches from then on reaches it;
the entries between its start and the reader's position at that moment are
read once with ``XRANGE``; entries at or before its start are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from infra.read_model import ReadModelKeys
from infra.settings import default

__all__ = ["Change", "ChangeHub", "Subscription", "parse_stream_id"]

log = logging.getLogger(__name__)

_STREAM_ID = re.compile(r"(\d{1,20})-(\d{1,20})")


def parse_stream_id(value: str) -> tuple[int, int] | None:
    """A Redis stream id ``<ms>-<seq>`` as a sortable pair, ``None`` if malformed."""
    match = _STREAM_ID.fullmatch(value)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def _order(value: str) -> tuple[int, int]:
    parsed = parse_stream_id(value)
    if parsed is None:
        raise ValueError(f"not a stream id: {value!r}")
    return parsed


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a change stream: a registration's new row for a goal."""

    id: str
    registration_id: str
    goal_id: str
    row: bytes


@dataclass(eq=False)
class Subscription:
    """The changes of one learning instance after ``after``, filtered to
    ``goal_ids`` (and to one registration when ``registration_id`` is set)."""

    li_id: str
    after: str
    goal_ids: frozenset[str]
    registration_id: str | None
    maxsize: int
    backlog: list[Change] = field(default_factory=list)
    dropped: bool = False
    ended: bool = False
    _after: tuple[int, int] = field(init=False)
    _queue: asyncio.Queue[Change | None] = field(init=False)

    def __post_init__(self) -> None:
        self._after = _order(self.after)
        # One slot more than the limit: the end marker always fits.
        self._queue = asyncio.Queue(self.maxsize + 1)

    def wants(self, change: Change) -> bool:
        return change.goal_id in self.goal_ids and (
            self.registration_id is None
            or change.registration_id == self.registration_id
        )

    def offer(self, change: Change) -> None:
        """Queue a change (called by the reader); drop the subscriber when full."""
        if self.ended or not self.wants(change) or _order(change.id) <= self._after:
            return
        if self._queue.qsize() >= self.maxsize:
            self.dropped = True
            self.end()
            return
        self._queue.put_nowait(change)

    def end(self) -> None:
        """End the subscription: what is queued is discarded (memory is freed
        at once), the consumer sees the end."""
        if self.ended:
            return
        self.ended = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def batches(self, max_batch: int = 256) -> AsyncIterator[list[Change]]:
        """The changes in order, as batches of what is available at once."""
        for i in range(0, len(self.backlog), max_batch):
            yield self.backlog[i : i + max_batch]
        self.backlog = []
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    yield batch
                    return
                batch.append(item)
            yield batch


@dataclass(eq=False)
class _Feed:
    """The reader of one learning instance's change stream."""

    position: str
    subscribers: set[Subscription] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    closed: bool = False

    def stop(self) -> None:
        # The flag as well as the cancel: a cancel that arrives while the
        # Redis client is between reads has been seen not to stop a blocked
        # XREAD (redis-py 8 under uvicorn); the loop then ends within block_ms.
        self.closed = True
        if self.task is not None:
            self.task.cancel()


class ChangeHub:
    """Per-process readers of the change streams, shared by all subscriptions.

    ``redis`` must be a client of its own whose socket timeout exceeds
    ``block_ms`` (a blocked ``XREAD`` holds its connection).
    """

    def __init__(
        self,
        redis: Redis,
        keys: ReadModelKeys | None = None,
        *,
        queue_size: int = default("stream_queue_events"),
        block_ms: int = 5_000,
        read_count: int = 1000,
    ) -> None:
        self.redis = redis
        self.keys = keys or ReadModelKeys()
        self.queue_size = queue_size
        self.block_ms = block_ms
        self.read_count = read_count
        self._feeds: dict[str, _Feed] = {}

    @property
    def subscriptions(self) -> int:
        """Open subscriptions (for tests and the benchmark)."""
        return sum(len(f.subscribers) for f in self._feeds.values())

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        li_id: str,
        after: str,
        goal_ids: Iterable[str],
        registration_id: str | None = None,
    ) -> AsyncIterator[Subscription]:
        """A subscription to the changes after stream id ``after``; ended and
        unregistered on exit. Raises ``RedisError`` if the catch-up read fails."""
        feed = self._feeds.get(li_id)
        if feed is None or _order(after) > _order(feed.position):
            # Never past the stream's end: a reader started at an id nobody
            # has written yet would wait for it, and every stream of the
            # learning instance shares that reader.
            last = await self._last_id(li_id)
            if _order(after) > _order(last):
                after = last
        sub = Subscription(
            li_id, after, frozenset(goal_ids), registration_id, self.queue_size
        )
        feed = self._feeds.get(li_id)
        if feed is None:
            feed = self._feeds[li_id] = _Feed(position=after)
            feed.task = asyncio.create_task(
                self._read(li_id, feed), name=f"changes:{li_id}"
            )
        position = feed.position
        feed.subscribers.add(sub)  # from here on, the reader dispatches to it
        try:
            if _order(position) > _order(after):
                entries = await self.redis.xrange(
                    self.keys.changes(li_id), min=f"({after}", max=position
                )
                sub.backlog = [c for c in _changes(entries) if sub.wants(c)]
            yield sub
        finally:
            sub.end()
            feed.subscribers.discard(sub)
            if not feed.subscribers and self._feeds.get(li_id) is feed:
                del self._feeds[li_id]
                feed.stop()

    async def _last_id(self, li_id: str) -> str:
        """The change stream's last entry id ("0-0" when it is empty)."""
        entries: Any = await self.redis.xrevrange(
            self.keys.changes(li_id), "+", "-", count=1
        )
        return str(entries[0][0].decode()) if entries else "0-0"

    async def _read(self, li_id: str, feed: _Feed) -> None:
        key = self.keys.changes(li_id)
        try:
            while not feed.closed:
                reply: Any = await self.redis.xread(
                    {key: feed.position}, count=self.read_count, block=self.block_ms
                )
                for _stream, entries in reply or ():
                    for change in _changes(entries):
                        feed.position = change.id
                        for sub in list(feed.subscribers):
                            sub.offer(change)
        except (RedisError, OSError) as exc:
            if feed.closed:
                return
            # The streams end; their clients reconnect and resume.
            log.warning("reading %s failed (%s); ending its streams", key, exc)
            if self._feeds.get(li_id) is feed:
                del self._feeds[li_id]
            for sub in list(feed.subscribers):
                sub.end()

    async def close(self) -> None:
        """End every subscription and stop the readers."""
        feeds = list(self._feeds.values())
        self._feeds.clear()
        for feed in feeds:
            for sub in list(feed.subscribers):
                sub.end()
            feed.stop()
        for feed in feeds:
            if feed.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await feed.task
        await self.redis.aclose()


def _changes(entries: Any) -> list[Change]:
    """Entries of an XRANGE/XREAD reply (``[(id, {field: value})]``, bytes:
    the client does not decode responses; redis-py types replies loosely)."""
    return [
        Change(
            id=entry_id.decode(),
            registration_id=fields[b"r"].decode(),
            goal_id=fields[b"g"].decode(),
            row=fields[b"row"],
        )
        for entry_id, fields in entries
    ]
