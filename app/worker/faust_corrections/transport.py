"""Corrections of Faust's aiokafka transport (docs/upstream/README.md names
the upstream behaviour and the test of each).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import faust
from faust.sensors import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

from infra.broker import BrokerProfile

__all__ = ["LeanMonitor", "MasteryApp"]


def _wake(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Run a coroutine that was started by hand and yielded ``yielded`` to
    completion, as an asyncio Task would (a future to wait for, or None).

    The future is waited for through a callback, not awaited: it was yielded
    by the coroutine's own ``await`` and cannot be awaited a second time."""
    try:
        while True:
            if yielded is None:
                await asyncio.sleep(0)  # a bare yield: one turn of the loop
            else:
                waiter = asyncio.get_running_loop().create_future()
                yielded.add_done_callback(functools.partial(_wake, waiter))
                await waiter
            try:
                yielded = coro.send(None)
            except StopIteration as stop:
                return stop.value
    except asyncio.CancelledError:
        with contextlib.suppress(StopIteration, asyncio.CancelledError):
            coro.throw(asyncio.CancelledError())
        coro.close()
        raise


class FetchedPositions:
    """Where the consumer stood for each partition before and after a fetch
    took its records (the ``stale-fetch`` correction, ``_Consumer.getmany``).

    aiokafka advances a partition's position when it hands records over; a
    seek or a new assignment replaces it. Records taken before either are
    stale.
    """

    __slots__ = ("_after", "_assignment", "_subscription", "before")

    def __init__(
        self, subscription: Any, assignment: Any, before: dict[Any, int | None]
    ):
        self._subscription = subscription
        self._assignment = assignment
        #: Position per partition when the fetch began (where its records
        #: start, holes aside); {} when the assignment changed meanwhile.
        self.before = before
        self._after: dict[Any, int | None] = {}

    @classmethod
    def begin(cls, consumer: Any) -> FetchedPositions:
        subscription = consumer._subscription
        assignment = cls._assignment_of(subscription)
        before: dict[Any, int | None] = {}
        if assignment is not None:
            for tp in assignment.tps:
                before[tp] = assignment.state_value(tp)._position
        return cls(subscription, assignment, before)

    def taken(self, records: Any) -> None:
        """Records were handed over: remember where they left each partition."""
        assignment = self._assignment_of(self._subscription)
        if assignment is not self._assignment:
            self._assignment, self.before = assignment, {}
        if assignment is not None:
            for tp in records:
                state = assignment.state_value(tp)
                self._after[tp] = None if state is None else state._position

    @staticmethod
    def _assignment_of(subscription: Any) -> Any:
        current = subscription.subscription
        return None if current is None else current.assignment

    def current(self, tp: Any) -> bool:
        """True while ``tp`` is still where the fetch left it."""
        assignment = self._assignment
        now = self._assignment_of(self._subscription)
        if assignment is None or now is not assignment:
            return False
        state = assignment.state_value(tp)
        after = self._after.get(tp)
        return state is not None and after is not None and state._position == after


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        # Runs in the consumer thread, where Faust's seeks run too: nothing
        # comes between aiokafka handing the records over and ``taken``.
        fetched = FetchedPositions.begin(consumer)
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        fetched.taken(records)
        consumer_of_thread: _Consumer = self.consumer  # type: ignore[assignment]
        consumer_of_thread.fetched_positions = fetched
        return records

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        profile: BrokerProfile | None = getattr(self.app, "profile", None)
        if profile is not None:
            # Faust hard-codes fetch_max_wait_ms=1500; aiokafka keeps the
            # constructor argument here and builds its Fetcher from it in
            # start(); there is no public setter.
            consumer._fetch_max_wait_ms = profile.fetch_max_wait_ms
        return consumer


#: How long the fetch loop waits for records (``_Consumer._getmany``; Faust
#: asks for 1 s): while some partitions are held back because their stream's
#: queue is full, and otherwise.
BUFFERED_WAIT_S = 0.005
FETCH_LOOP_WAIT_S = 0.05


class _Consumer(faust_aiokafka.Consumer):
    #: Set by the consumer thread with every fetch (``FetchedPositions``).
    fetched_positions: FetchedPositions | None = None
    #: Records dropped because a seek or an assignment came after their fetch.
    stale_records_dropped = 0

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        # Faust's fetch loop (Consumer._drain_messages) delivers a record only
        # at or above the partition's "read offset", the last offset it
        # delivered, and acks the offsets between the two as a gap. Neither
        # follows aiokafka's position. After a rebalance ``perform_seek``
        # moves a retained partition back to its committed offset and resets
        # the read offset, each in its own step (the seek in the consumer
        # thread, the reset in the event loop), while records fetched before
        # the seek can still be in hand. Seen on Apache Kafka:
        # - a record fetched before the seek is delivered after it, sets the
        #   read offset past the committed one, and the records fetched again
        #   below it are dropped as "already read";
        # - a seek lands while a batch is being delivered: its reset read
        #   offset meets the batch's next record, and the offsets in between
        #   are acked as a gap, though the seek asks for them again (a commit
        #   can then pass them before they are processed).
        # Either way offsets are committed for records never processed
        # (faust-streaming #216/#221; docs/upstream/faust-read-offset-skip.md).
        # So: a record is delivered only while its partition is where the
        # fetch left it (stale ones are dropped; aiokafka fetches them again
        # from the seek's position), Faust's read offset is cleared so it
        # decides nothing, and a gap is acked only for offsets the partition's
        # own fetches passed over (a transaction's control records, a
        # compacted topic): between where a fetch began and its first record,
        # and between two records of one fetch.
        self.fetched_positions = None
        read_offsets = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        expected: dict[Any, int] = {}
        async for tp, message in super().getmany(timeout):
            fetched = self.fetched_positions
            if fetched is None:  # not our consumer thread: Faust's own rules
                yield tp, message
                continue
            if not fetched.current(tp):
                self.stale_records_dropped += 1
                continue
            offset = message.offset
            want = expected[tp] if tp in expected else fetched.before.get(tp)
            if want is not None and offset > want and acks_enabled_for(message.topic):
                await self._add_gap(tp, want, offset - 1)
            expected[tp] = offset + 1
            read_offsets[tp] = None
            yield tp, message

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        # Faust's fetch loop (Consumer._drain_messages) delivers every record
        # with ``await self.wait_first(callback(message), suspend_flow.wait())``:
        # mode's wait_first wraps each of those and the service's stop and
        # crash events in a task, waits for the first, and cancels the rest.
        # Four tasks per record were ~45 % of a counting agent's CPU (profile
        # in docs/benchmarks.md). The callback (the conductor putting the
        # event on its streams' queues) almost always completes without
        # suspending: run it inline, and race it against the other awaitables
        # the way mode does only when it suspends (a full queue).
        if (
            len(coros) == 2
            and timeout is None
            and inspect.iscoroutine(coros[0])
            and inspect.iscoroutine(coros[1])
            and not self.suspend_flow.is_set()
            and not self._stopped.is_set()
            and not self._crashed.is_set()
        ):
            first, other = coros
            try:
                yielded = first.send(None)
            except StopIteration as stop:
                other.close()
                return WaitResults([first], [stop.value], False)
            except BaseException:
                other.close()  # as mode would: the error propagates
                raise
            results: WaitResults = await super().wait_first(
                _resume(first, yielded), other
            )
            return results
        results = await super().wait_first(*coros, timeout=timeout)
        return results

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        # Faust's fetch loop asks for records with a 1 s wait. While a
        # stream's queue is under pressure, Faust takes its partitions out of
        # the set it asks for (``on_buffer_full``); when every busy partition
        # is out, the wait covers only idle ones (the catalog, changelogs).
        # The queue drains and the partitions come back (``on_buffer_drop``),
        # but the wait in hand returns only for records of the partitions it
        # was given: the fetched records of the busy ones sat up to 1 s while
        # the agent idled. A replaying worker spent about half its time so.
        # Partitions can be held back during a wait too, so every wait is
        # short; an empty answer just starts the loop's next turn.
        held_back = bool(self._buffered_partitions)
        wait = BUFFERED_WAIT_S if held_back else FETCH_LOOP_WAIT_S
        return await super()._getmany(active_partitions, min(timeout, wait))

    def stop_flow(self) -> None:
        # Faust stops the flow when a rebalance or a shutdown begins, then
        # waits for every event to be acked: the worker acks after its
        # checkpoint (app/worker/checkpoint.py), so it checkpoints at once.
        super().stop_flow()
        hook = getattr(self.app, "on_flow_stopped", None)
        if hook is not None:
            hook()


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class LeanMonitor(Monitor):
    """Faust's Monitor without its per-record bookkeeping.

    Faust (0.15) calls four Monitor hooks for every record (message in,
    stream event in/out, message out), each updating counters and deques
    that only Faust's web views read; the worker runs without them
    (``web_enabled=False``) and measures itself. Commit, rebalance and send
    hooks stay.
    """

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(
        self, tp: Any, offset: int, stream: Any, event: Any
    ) -> dict[str, Any] | None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


class MasteryApp(faust.App):
    """``faust.App`` whose consumer follows a :class:`BrokerProfile`."""

    #: Called when Faust stops the consumer's flow (a rebalance or a
    #: shutdown begins); the worker checkpoints at once.
    on_flow_stopped: Callable[[], None] | None = None

    def __init__(self, *args: Any, profile: BrokerProfile | None = None, **kwargs: Any):
        self.profile = profile
        kwargs.setdefault("Monitor", LeanMonitor)
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
