"""The worker: Faust app, topics, the registration-state table and the agents.

Agents stay thin: decode, look up state, call :mod:`processors`, write state,
project to Redis. Per-event work is kept minimal because Faust's per-event
machinery is the cost: events are taken in batches (``take_events``), each
touched registration is read once, folded over all its events of the batch,
written to the table once, and its rows projected once, in one Redis pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import weakref
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AIOTopicPartition
from aiokafka.errors import KafkaError
from faust.streams import _current_event
from pydantic import ValidationError
from redis.asyncio import Redis

from app.catalog_follower import CatalogEventT, CatalogFollower
from app.projector import Projection, RedisProjector
from app.transport import MasteryApp
from infra.broker import BrokerProfile, end_offsets
from infra.settings import Settings
from infra.topics import TopicNames
from processors.catalog import Catalog
from processors.goals import affected_by, evaluate
from processors.registration import (
    AttemptResult,
    RegistrationState,
    apply_attempt,
    is_redelivery,
    register,
    with_position,
)
from schemas.dead_letter import DeadLetter
from schemas.events import (
    AttemptGraded,
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    RegistrationCreated,
    decode_event,
)
from schemas.read_model import ReadModelKeys

__all__ = ["Worker", "create_worker"]

log = logging.getLogger(__name__)

_ALL = "*"


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()[:5]
        ]
        return "invalid event: " + "; ".join(parts)
    return f"invalid event: {exc}"


@dataclass(slots=True)
class _Touched:
    """What a batch's applied attempts touched for one registration."""

    modules: set[str] = field(default_factory=set)
    objectives: set[str] = field(default_factory=set)
    goal_ids: set[str] = field(default_factory=set)

    def add(self, attempt: AttemptGraded, catalog: Catalog) -> None:
        self.modules.add(attempt.module_id)
        module = catalog.module(attempt.module_id)
        if module is not None:
            self.objectives.update(module.learning_objective_ids)
        if attempt.goal_id is not None:
            self.goal_ids.add(attempt.goal_id)


async def _or_die(work: Awaitable[None]) -> None:
    """Run one batch; on an unexpected error exit at once, without acking it.

    Faust's ``take_events`` acks a batch in a ``finally`` — even when the agent
    raised — so letting an exception escape would commit offsets of events that
    were never applied. Crash-only instead: the process exits, its offsets stay
    uncommitted, and the restarted worker re-processes the batch (idempotently).
    """
    try:
        await work
    except asyncio.CancelledError:
        # Cancelled mid-batch (shutdown or rebalance): returning would let
        # take_events ack events whose effects may not all be stored.
        log.warning("batch cancelled mid-way; exiting without committing its offsets")
        logging.shutdown()
        os._exit(75)  # EX_TEMPFAIL: restart me (app.devstack.RESTART_EXIT_CODE)
    except Exception:
        log.critical(
            "batch failed; exiting without committing its offsets", exc_info=True
        )
        logging.shutdown()
        os._exit(70)


class Worker:
    """Owns the Faust app and everything its agents use."""

    def __init__(
        self, settings: Settings, profile: BrokerProfile, bootstrap: str, redis_url: str
    ):
        self.settings = settings
        self.topics = TopicNames(settings.topic_prefix)
        self.keys = ReadModelKeys()
        self.redis: Redis = Redis.from_url(redis_url, socket_timeout=5.0)
        self.projector = RedisProjector(self.redis)
        self.follower = CatalogFollower(
            bootstrap,
            self.topics.catalog,
            profile=profile,
            listener=self._on_catalog_change,
        )
        self.lock = asyncio.Lock()
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self.stats: dict[str, int] = {
            "applied": 0,
            "duplicate": 0,
            "redelivered": 0,
            "rejected": 0,
        }
        self._bootstrap = bootstrap
        self._profile = profile
        self._last_progress = time.monotonic()
        #: Next offset expected per source partition since the last assignment
        #: (see _check_no_records_skipped).
        self._next_offset: dict[tuple[str, int], int] = {}
        self._offsets_probe: AIOKafkaConsumer | None = None

        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.app = MasteryApp(
            settings.worker_id,
            broker=f"kafka://{bootstrap}",
            store="rocksdb://",
            datadir=str(data_dir),
            web_enabled=False,
            topic_partitions=settings.topic_partitions,
            topic_replication_factor=settings.topic_replication,
            profile=profile,
            consumer_auto_offset_reset="earliest",
            key_serializer="raw",
            value_serializer="raw",
            **profile.faust_settings(),
        )
        self.app.seek_unset_to_beginning = frozenset(
            {self.topics.registration_events, self.topics.catalog}
        )
        self.registration_topic = self.app.topic(
            self.topics.registration_events,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.catalog_topic = self.app.topic(
            self.topics.catalog, key_serializer="raw", value_serializer="raw"
        )
        self.dead_letter_topic = self.app.topic(
            self.topics.dead_letter, key_serializer="raw", value_serializer="raw"
        )
        self.states = self.app.Table(
            "registration-state",
            partitions=settings.topic_partitions,
            key_type=bytes,
            value_type=bytes,
            options={"driver": "rocksdict"},
        )
        self.app.agent(self.registration_topic, name="registration-events")(
            self._registration_agent
        )
        self.app.agent(self.catalog_topic, name="catalog-events")(self._catalog_agent)
        self.app.task(self._run_follower)
        self.app.task(self._run_rederiver)
        self.app.task(self._run_watchdog)
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)
        self.app.on_before_shutdown.connect(self._on_before_shutdown)

    # -- agents -------------------------------------------------------------

    async def _registration_agent(self, stream: Any) -> None:
        await self.follower.ready.wait()
        within = self.settings.batch_within_ms / 1000
        async for events in stream.take_events(self.settings.batch_max_events, within):
            async with self.lock:
                await _or_die(self.handle_registration_batch(events))
            self._last_progress = time.monotonic()

    async def _catalog_agent(self, stream: Any) -> None:
        async for event in stream.events():
            await _or_die(self.handle_catalog_record(event))

    # -- registration events ------------------------------------------------

    async def handle_registration_batch(self, events: Sequence[Any]) -> None:
        """Apply one batch of registration events; see the module docstring."""
        decoded: list[tuple[Any, RegistrationCreated | AttemptGraded]] = []
        dead: list[DeadLetter] = []
        await self._check_no_records_skipped(events)
        for ev in events:
            try:
                event = decode_event(ev.value or b"")
                if not isinstance(event, RegistrationCreated | AttemptGraded):
                    raise ValueError(f"{event.type} does not belong on this topic")
                if ev.key is not None and ev.key != event.registration_id.encode():
                    raise ValueError("record key differs from registration_id")
            except (ValidationError, ValueError) as exc:
                dead.append(self._dead_letter(ev, _reason(exc)))
                self.stats["rejected"] += 1
                continue
            decoded.append((ev, event))

        catalog = self.follower.catalog
        if any(self._needs_catalog(e) for _, e in decoded):
            await self.follower.catch_up(self.settings.catalog_catchup_timeout_s)

        states: dict[str, RegistrationState | None] = {}
        carrier: dict[str, Any] = {}
        registered: set[str] = set()
        touched: dict[str, _Touched] = {}
        projection = Projection(self.keys)
        for ev, event in decoded:
            reg_id = event.registration_id
            if reg_id in states:
                state = states[reg_id]
            else:
                state = states[reg_id] = self._load(reg_id, ev)
            if is_redelivery(state, ev.message.partition, ev.message.offset):
                # Already folded in (redelivered after a crash or rebalance).
                # Written and projected again all the same: the local store
                # may hold its effect while the changelog and Redis do not
                # (the process died between them); the re-write puts it in
                # the changelog before this offset is committed.
                self.stats["redelivered"] += 1
                carrier[reg_id] = ev
                if isinstance(event, RegistrationCreated):
                    registered.add(reg_id)
                else:
                    touched.setdefault(reg_id, _Touched()).add(event, catalog)
                continue
            if isinstance(event, RegistrationCreated):
                new_state: RegistrationState | None = register(state, event)
                registered.add(reg_id)
                self.stats["applied"] += 1
            else:
                try:
                    result = apply_attempt(state, event, catalog)
                except Exception as exc:  # a bug must not sink the batch or the event
                    log.exception("applying %s failed", event.attempt_id)
                    result = AttemptResult(
                        state, "rejected", f"internal error: {exc!r}"
                    )
                self.stats[result.outcome] += 1
                if result.outcome == "rejected":
                    dead.append(self._dead_letter(ev, result.reason or "rejected"))
                new_state = result.state
                if result.outcome != "rejected":
                    # A duplicate (an attempt re-sent as a new record) is
                    # re-written and re-projected too, as a redelivery is.
                    touched.setdefault(reg_id, _Touched()).add(event, catalog)
            states[reg_id] = new_state
            if new_state is not None:
                # The state advances to this record's position, whatever its
                # outcome: a redelivered rejection is not dead-lettered twice.
                carrier[reg_id] = ev

        for reg_id, ev in carrier.items():
            state = states[reg_id]
            if state is not None:
                state = with_position(state, ev.message.partition, ev.message.offset)
                self._store(reg_id, state, ev)
                if reg_id in registered:  # every goal: a new learner gets its rows
                    self._project_rows(projection, reg_id, state)
                elif reg_id in touched:
                    self._project_rows(projection, reg_id, state, touched[reg_id])
        for reg_id in registered:
            state = states[reg_id]
            if state is not None:
                projection.registration(state)

        await self._send_dead_letters(dead)
        await self.projector.write(projection)

    async def _check_no_records_skipped(self, events: Sequence[Any]) -> None:
        """Crash-only guard: no record of a source partition may be skipped.

        Faust drops records it fetched when a rebalance begins and seeks back
        to the committed offsets, but its fetch loop then also drops every
        record below the highest offset it delivered before (its "read
        offset"), which a prefetched record of the old generation can leave
        too high (faust-streaming issues #216, #221). The skipped offsets would
        then be committed by the acks of later records and never applied.

        So after each assignment the first event of a partition must be the
        record at the group's committed offset (or the log's first record),
        and every later one the record after the previous one. A larger offset
        is checked by reading the partition from the expected offset (a real
        Kafka may have gaps, e.g. a transaction's control records); if records
        were skipped, the worker exits (75) without acking this batch, and its
        restart reads from the committed offset.
        """
        expected = self._next_offset
        for ev in events:
            message = ev.message
            tp = (message.topic, message.partition)
            offset = message.offset
            want = expected.get(tp)
            if want is None or offset > want:
                await self._or_restart(tp, offset, want)
            if want is None or offset >= want:
                expected[tp] = offset + 1

    async def _or_restart(
        self, tp: tuple[str, int], offset: int, want: int | None
    ) -> None:
        topic, partition = tp
        try:
            skipped = await asyncio.wait_for(
                self._skipped_before(AIOTopicPartition(topic, partition), offset, want),
                30.0,
            )
        except (TimeoutError, KafkaError) as exc:
            skipped = f"could not check ({exc!r})"
        if not skipped:
            return
        log.critical(
            "event %s/%d at offset %d, but %s (Faust's read offset: %s): exiting "
            "to restart from the committed offset",
            topic,
            partition,
            offset,
            skipped,
            self._faust_read_offset(topic, partition),
        )
        logging.shutdown()
        os._exit(75)  # EX_TEMPFAIL: app.devstack.RESTART_EXIT_CODE

    def _faust_read_offset(self, topic: str, partition: int) -> object:
        read_offsets = getattr(self.app.consumer, "_read_offset", {})
        return next(
            (
                o
                for tp, o in read_offsets.items()
                if (tp.topic, tp.partition) == (topic, partition)
            ),
            None,
        )

    async def _skipped_before(
        self, tp: AIOTopicPartition, offset: int, want: int | None = None
    ) -> str:
        """Why records before ``offset`` were skipped, or "" when none were.

        ``want``: the offset expected next; None for the first event after an
        assignment, which must be the group's committed offset (or the first
        record in the log).
        """
        probe = self._offsets_probe
        if probe is None:
            probe = self._offsets_probe = self._group_probe()
            await probe.start()
        if want is None:
            committed = await probe.committed(tp)
            if committed is None:
                committed = (await probe.beginning_offsets([tp]))[tp]
        else:
            committed = want
        if offset <= committed:
            return ""
        probe.assign([tp])
        try:
            probe.seek(tp, committed)
            batch = await probe.getmany(tp, timeout_ms=5000, max_records=1)
        finally:
            probe.assign([])
        records = batch.get(tp, [])
        if not records:
            return f"nothing could be read from offset {committed}"
        if records[0].offset < offset:
            return f"the log has offset {records[0].offset} (expected: {committed})"
        return ""

    def _needs_catalog(self, event: RegistrationCreated | AttemptGraded) -> bool:
        """Does the event name a module or goal this worker has not seen yet?"""
        if not isinstance(event, AttemptGraded):
            return False
        catalog = self.follower.catalog
        if catalog.module(event.module_id) is None:
            return True
        return event.goal_id is not None and catalog.goal(event.goal_id) is None

    def _load(self, reg_id: str, carrier: Any) -> RegistrationState | None:
        # Faust's RocksDB store reads a key from the store partition of "the
        # current event". Inside a take_events batch that is the batch's last
        # event, whose partition may not be this registration's: a read there
        # finds nothing (the registration would look unknown). Name the event.
        token = _current_event.set(weakref.ref(carrier))
        try:
            raw = self.states.get(reg_id.encode())
        finally:
            _current_event.reset(token)
        return None if raw is None else RegistrationState.from_bytes(raw)

    def _store(self, reg_id: str, state: RegistrationState, carrier: Any) -> None:
        # Likewise Faust writes a key to the store and changelog partition of
        # the current event: name one of this registration's events.
        token = _current_event.set(weakref.ref(carrier))
        try:
            self.states[reg_id.encode()] = state.to_bytes()
        finally:
            _current_event.reset(token)

    def _project_rows(
        self,
        projection: Projection,
        reg_id: str,
        state: RegistrationState,
        touched: _Touched | None = None,
    ) -> None:
        """Rows of the registration's goals; with ``touched``, only of the goals
        those attempts can change (the others keep their row or template)."""
        if state.role != "learner":
            return
        catalog = self.follower.catalog
        for goal in catalog.goals_of(state.learning_instance_id):
            if touched is not None and not affected_by(
                goal,
                catalog,
                modules=touched.modules,
                objectives=touched.objectives,
                goal_ids=touched.goal_ids,
            ):
                continue
            projection.row(
                reg_id, goal.goal_id, orjson.dumps(evaluate(goal, state, catalog))
            )

    # -- catalog events -----------------------------------------------------

    async def handle_catalog_record(self, ev: Any) -> None:
        """Validate a catalog record, dead-letter it or project its read-model keys."""
        try:
            event = decode_event(ev.value or b"")
            if not isinstance(
                event, LearningInstanceCreated | GoalDefined | ModuleTagged
            ):
                raise ValueError(f"{event.type} does not belong on this topic")
        except (ValidationError, ValueError) as exc:
            await self._send_dead_letters([self._dead_letter(ev, _reason(exc))])
            return
        # The template depends on the catalog as of this record: let the
        # follower reach it first.
        await self.follower.wait_for_record(
            ev.message.partition,
            ev.message.offset,
            self.settings.catalog_catchup_timeout_s,
        )
        projection = Projection(self.keys)
        if isinstance(event, LearningInstanceCreated):
            # The first creation wins (as in the catalog): a second one must
            # not hand the learning instance to another partner.
            projection.learning_instance(
                self.follower.catalog.learning_instance(event.learning_instance_id)
                or event
            )
        elif isinstance(event, GoalDefined):
            current = self.follower.catalog.goal(event.goal_id) or event
            template = orjson.dumps(evaluate(current, None, self.follower.catalog))
            projection.goal(current, template)
        await self.projector.write(projection)

    async def _on_catalog_change(
        self, event: CatalogEventT, changed: bool, live: bool
    ) -> None:
        if not live or not changed:
            return  # the startup repair pass covers everything replayed
        if isinstance(event, GoalDefined):
            self._mark_dirty(event.learning_instance_id)
        elif isinstance(event, ModuleTagged):
            # Which modules cover a target (work per target) and module-target
            # mastery depend on module tags.
            self._mark_dirty(_ALL)

    # -- liveness -----------------------------------------------------------

    async def _run_watchdog(self) -> None:
        """Crash-only answer to a stalled consumer.

        Seen with Faust on the embedded broker: after a double group join at
        start-up the stream sometimes never resumes, with no error. When events
        wait (end offset > committed offset on this group's partitions) and no
        batch was processed for ``stall_timeout_s``, exit with code 75 so the
        supervisor restarts the worker; uncommitted events are then processed
        again, idempotently.
        """
        await self.follower.ready.wait()
        probe = self._group_probe()
        await probe.start()
        busy_since: float | None = None
        try:
            while True:
                await asyncio.sleep(min(5.0, self.settings.stall_timeout_s / 3))
                now = time.monotonic()
                if self.app.rebalancing or getattr(self.app, "in_recovery", False):
                    # Rebalancing or recovering is progress, unless it never ends.
                    busy_since = busy_since or now
                    if now - busy_since < 4 * self.settings.stall_timeout_s:
                        self._last_progress = now
                        continue
                else:
                    busy_since = None
                idle = now - self._last_progress
                if idle < self.settings.stall_timeout_s:
                    continue
                try:
                    lag = await asyncio.wait_for(self._lag(probe), 15.0)
                except (TimeoutError, KafkaError) as exc:
                    log.warning("watchdog could not read the lag: %r", exc)
                    continue
                if lag > 0:
                    log.critical(
                        "no batch for %.0f s while %d events wait: exiting to restart",
                        idle,
                        lag,
                    )
                    # The local store may hold writes whose changelog records
                    # never reached the broker (the stall blocks the producer's
                    # flush, and so the offset commit): restart from the
                    # changelog alone, which is consistent with the committed
                    # offsets (Faust flushes the producer before committing).
                    shutil.rmtree(self.settings.data_dir, ignore_errors=True)
                    logging.shutdown()
                    os._exit(75)  # EX_TEMPFAIL: app.devstack.RESTART_EXIT_CODE
                self._last_progress = time.monotonic()  # idle, and rightly so
        finally:
            await probe.stop()

    def _group_probe(self) -> AIOKafkaConsumer:
        """A consumer that reads the group's committed offsets and, by manual
        assignment, records; it never joins the group or commits."""
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.settings.worker_id,
            enable_auto_commit=False,
            fetch_max_wait_ms=self._profile.fetch_max_wait_ms,
        )

    async def _lag(self, probe: AIOKafkaConsumer) -> int:
        assigned = [
            AIOTopicPartition(tp.topic, tp.partition)
            for tp in self.app.consumer.assignment()
            if tp.topic == self.topics.registration_events
        ]
        if not assigned:
            # A worker left with no partitions after a rebalance is idle while
            # the group's events may wait: judge by the whole topic.
            partitions = probe.partitions_for_topic(self.topics.registration_events)
            assigned = [
                AIOTopicPartition(self.topics.registration_events, p)
                for p in sorted(partitions or ())
            ]
            if not assigned:
                return 0
        ends = await end_offsets(probe, self._bootstrap, assigned, self._profile)
        lag = 0
        for tp in assigned:
            committed = await probe.committed(tp)
            lag += max(0, ends[tp] - (committed or 0))
        return lag

    # -- re-derivation (goal/module changes, startup repair) ---------------

    def _mark_dirty(self, li_id: str) -> None:
        self._dirty.add(li_id)
        self._dirty_event.set()

    async def _on_before_shutdown(self, *args: Any, **kwargs: Any) -> None:
        probe, self._offsets_probe = self._offsets_probe, None
        if probe is not None:
            await probe.stop()

    async def _on_rebalance_complete(self, *args: Any, **kwargs: Any) -> None:
        self._last_progress = time.monotonic()
        self._next_offset.clear()
        self._mark_dirty(_ALL)

    async def _run_follower(self) -> None:
        await self.follower.run()

    async def _run_rederiver(self) -> None:
        await self.follower.ready.wait()
        while True:
            await self._dirty_event.wait()
            await asyncio.sleep(0.1)  # coalesce bursts of catalog changes
            dirty, self._dirty = self._dirty, set()
            self._dirty_event.clear()
            async with self.lock:
                await self.rederive(dirty)

    async def rederive(self, learning_instances: Iterable[str]) -> int:
        """Recompute and write the rows of local registrations; returns how many.

        With ``"*"`` this is the repair pass run after every partition
        assignment: it also rewrites the registrations' facts and the whole
        catalog's keys, so a flushed or replaced Redis is restored.
        """
        wanted = set(learning_instances)
        everything = _ALL in wanted
        count = 0
        projection = Projection(self.keys)
        if everything:
            self._project_catalog(projection)
        for key, raw in self.states.items():
            state = RegistrationState.from_bytes(raw)
            if everything or state.learning_instance_id in wanted:
                self._project_rows(projection, key.decode(), state)
                if everything:
                    projection.registration(state)
                count += 1
            if len(projection) >= 5000:
                await self.projector.write(projection)
                projection = Projection(self.keys)
                self._last_progress = time.monotonic()  # a long repair is progress
        await self.projector.write(projection)
        if count:
            log.info("re-derived rows of %d registrations", count)
        return count

    def _project_catalog(self, projection: Projection) -> None:
        catalog = self.follower.catalog
        for li in catalog.learning_instances():
            projection.learning_instance(li)
        for goal in catalog.goals():
            projection.goal(goal, orjson.dumps(evaluate(goal, None, catalog)))

    # -- dead letters -------------------------------------------------------

    def _dead_letter(self, ev: Any, reason: str) -> DeadLetter:
        message = ev.message
        log.warning(
            "dead-letter %s/%d/%d: %s",
            message.topic,
            message.partition,
            message.offset,
            reason,
        )
        return DeadLetter(
            reason=reason,
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key_b64=DeadLetter.encode_bytes(message.key),
            value_b64=DeadLetter.encode_bytes(message.value),
            rejected_at=datetime.now(UTC),
        )

    async def _send_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        futures = [
            await self.dead_letter_topic.send(
                key=d.dlq_key.encode(), value=d.model_dump_json().encode()
            )
            for d in dead
        ]
        for fut in futures:
            await fut  # acked by the broker before the source offsets are


def create_worker(
    settings: Settings, profile: BrokerProfile, bootstrap: str, redis_url: str
) -> Worker:
    """Build the worker (does not start it)."""
    return Worker(settings, profile, bootstrap, redis_url)
