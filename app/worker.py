"""The worker: Faust app, topics, the registration-state table and the agents.

Agents stay thin: the registration agent takes batches of records, loads the
states of their registrations from the state cache (app/state_cache.py),
folds the batch with :func:`processors.batch.fold`, keeps the new states in
the cache, dead-letters what was rejected and projects the rows to Redis in
one pipeline. States reach the changelog and RocksDB at the next checkpoint,
just before Faust commits offsets (app/checkpoint.py says the protocol step
by step). Faust-specific corrections live in app/faust_corrections/.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.broker_watch import (
    BrokerWatch,
    loss_first,
    process_name,
    report_consistency_errors,
)
from app.catalog_follower import CatalogEventT, CatalogFollower
from app.checkpoint import ChangelogWriter, Checkpoint, PendingSends, acknowledged
from app.faust_corrections.guards import GroupProbes, SkipGuard
from app.faust_corrections.restart import (
    BatchCancelled,
    BatchFailed,
    WorkerExit,
    access_denied,
    exit_process,
)
from app.faust_corrections.store import PartitionStore
from app.faust_corrections.streams import take_ready
from app.faust_corrections.transport import MasteryApp
from app.forecast_builder import ForecastBuilder, Waiting
from app.heap import HeapFreezer
from app.heartbeat import Heartbeat
from app.materialized import mark_materialized
from app.metrics import HealthServer, WorkerMetrics, observe_many
from app.state_cache import StateCache
from infra.broker import BrokerProfile
from infra.kafka_security import faust_broker_credentials, kafka_client_kwargs
from infra.read_model import Projection, ReadModelKeys, RedisProjector
from infra.redis_client import redis_client
from infra.settings import Settings
from infra.topics import TopicNames
from processors import batch
from processors.forecast import MIN_BUDGET_BYTES, ForecastTables, TableKey
from processors.forecaster import DeferredForecaster, SynchronousForecaster
from processors.history import HistoryPolicy
from processors.registration import RegistrationState
from processors.rows import derive_rows, goal_names, goal_template, timelines
from schemas.dead_letter import DeadLetter
from schemas.events import (
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    decode_event,
)
from schemas.transitions import StatusChanged

__all__ = ["Worker", "create_worker"]

log = logging.getLogger(__name__)

_ALL = "*"
#: Registrations re-derived per hold of the batch lock (about a batch's work).
_REDERIVE_CHUNK = 500


class Worker:
    """Owns the Faust app and everything its agents use."""

    def __init__(
        self, settings: Settings, profile: BrokerProfile, bootstrap: str, redis_url: str
    ):
        self.settings = settings
        self.topics = TopicNames(settings.topic_prefix)
        self.keys = ReadModelKeys()
        self.redis: Redis = redis_client(
            redis_url, cluster=settings.redis_cluster, socket_timeout=5.0
        )
        self.projector = RedisProjector(self.redis)
        # One set of security arguments (and TLS context) for every client.
        client_kwargs = kafka_client_kwargs(settings)
        self.follower = CatalogFollower(
            bootstrap,
            self.topics.catalog,
            profile=profile,
            listener=self._on_catalog_change,
            client_kwargs=client_kwargs,
        )
        self.lock = asyncio.Lock()
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._bootstrap = bootstrap
        self._profile = profile

        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.app = MasteryApp(
            settings.worker_id,
            broker=f"kafka://{bootstrap}",
            broker_credentials=faust_broker_credentials(settings),
            store="rocksdb://",
            datadir=str(data_dir),
            web_enabled=False,
            topic_partitions=settings.topic_partitions,
            topic_replication_factor=settings.topic_replication,
            profile=profile,
            consumer_auto_offset_reset="earliest",
            key_serializer="raw",
            value_serializer="raw",
            broker_commit_interval=settings.commit_interval_s,
            consumer_max_fetch_size=settings.consumer_fetch_bytes,
            stream_buffer_maxsize=settings.stream_buffer_events,
            **profile.faust_settings(),
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
        self.status_topic = self.app.topic(
            self.topics.status_changes, key_serializer="raw", value_serializer="raw"
        )
        self.states = self.app.Table(
            "registration-state",
            partitions=settings.topic_partitions,
            key_type=bytes,
            value_type=bytes,
            options={"driver": "rocksdict"},
        )
        self.store = PartitionStore(self.states)
        self.cache = StateCache(
            self.store, max_entries=settings.state_cache_max_entries
        )
        self.changelog = ChangelogWriter(
            bootstrap,
            self.states.changelog_topic.get_topic_name(),
            profile,
            client_kwargs=client_kwargs,
        )
        self.metrics = WorkerMetrics()
        self.sends = PendingSends()
        self.checkpoint = Checkpoint(
            self.cache,
            self.store,
            self.changelog,
            sends=self.sends,
            on_done=lambda seconds, _: self.metrics.commit_seconds.observe(seconds),
        )
        self._redis_writing_since: float | None = None
        self.heap = HeapFreezer()
        self._repaired_once = False
        # Work-remaining forecasts (docs/analytics.md, section 4): rows are
        # derived from the tables held; a missing table gives a provisional
        # row, is built off the loop's critical path, and the rows that
        # waited for it are derived again.
        # Each partner's share of the tables and of the inline builds
        # (docs/operations.md, "Shared pools and each partner's share").
        budget = settings.forecast_cache_mb * 2**20
        share = settings.forecast_partner_share_percent
        self.forecast_tables = ForecastTables(
            budget,
            owner_share_bytes=max(budget * share // 100, MIN_BUDGET_BYTES),
        )
        self.forecaster = DeferredForecaster(
            self.forecast_tables,
            inline_builds=settings.forecast_inline_builds,
            inline_builds_per_owner=-(-settings.forecast_inline_builds * share // 100),
        )
        # Timelines' points use exact forecasts (the same tables), never a
        # provisional one: they are kept, not derived again (processors/history.py).
        self.exact_forecaster = SynchronousForecaster(self.forecast_tables)
        self.history = HistoryPolicy(interval_us=settings.history_interval_s * 10**6)
        self.forecast_builder = ForecastBuilder(
            self.forecast_tables, self._on_forecasts_built
        )
        self._provisional_rows: Waiting[tuple[str, int]] = Waiting()
        self._provisional_goals: Waiting[str] = Waiting()
        self.app.before_commit = self._before_commit
        probes = GroupProbes(bootstrap, settings.worker_id, profile, client_kwargs)
        self.skip_guard = SkipGuard(self.app, probes)
        # A broker that lost its data, and "a worker runs", for the API.
        self.broker_watch = BrokerWatch.of_worker(
            settings, self.redis, bootstrap, profile
        )
        report_consistency_errors(self.app, self.broker_watch, str(data_dir))
        self.heartbeat = Heartbeat(
            self.redis,
            process_name(settings.worker_id),
            settings.worker_heartbeat_ttl_s,
        )
        self._changelog_started = False
        #: Partitions of the registration-events topic (the broker's count
        #: once known: the key -> partition rule depends on it).
        self._partitions = settings.topic_partitions
        self.app.agent(self.registration_topic, name="registration-events")(
            self._registration_agent
        )
        self.app.agent(self.catalog_topic, name="catalog-events")(self._catalog_agent)
        self.app.task(self._run_follower)
        self.app.task(self._run_rederiver)
        self.app.task(self._run_forecast_builder)
        self.app.task(self._run_read_model_watch)
        self.app.task(self._run_broker_watch)
        self.app.task(self.heartbeat.run)
        if settings.metrics_port is not None:
            self.app.task(self._run_health)
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)
        self.app.on_before_shutdown.connect(self._on_before_shutdown)

    # -- agents -------------------------------------------------------------

    async def _registration_agent(self, stream: Any) -> None:
        await self.follower.ready.wait()
        await self._start_changelog()
        within = self.settings.batch_within_ms / 1000
        async for events in take_ready(stream, self.settings.batch_max_events, within):
            async with self.lock:
                await self._or_exit(self.handle_registration_batch(events))

    async def _catalog_agent(self, stream: Any) -> None:
        async for event in stream.events():
            await self._or_exit(self.handle_catalog_record(event))

    async def _or_exit(self, work: Awaitable[None]) -> None:
        """Run one unit of work; on any failure end the process, acking nothing.

        ``take_ready``, like Faust's ``take_events``, acks a batch in a
        ``finally``, even when the agent raised: letting an exception escape
        would commit offsets of events that were never applied. Crash-only
        instead (restart.py).
        """
        try:
            await work
        except WorkerExit as exc:
            await self._loss_first()
            # A checkpoint's send refused for a missing ACL is 77 too.
            exit_process(access_denied(exc) or exc)
        except asyncio.CancelledError:
            # Cancelled mid-batch (shutdown or rebalance): returning would let
            # take_ready ack events whose effects may not all be stored.
            exit_process(BatchCancelled("batch cancelled mid-way"))
        except Exception as exc:
            await self._loss_first()
            # A missing ACL is the operator's to fix, not a bug: one line, 77.
            denied = access_denied(exc)
            if denied is not None:
                exit_process(denied)
            failed = BatchFailed(f"batch failed: {exc!r}")
            failed.__cause__ = exc
            exit_process(failed)

    async def _loss_first(self) -> None:
        """Before a failed batch or checkpoint ends the process: if the broker
        lost data, that is the cause, and the exit is the loss's (65, not
        restarted). A broker restarted on empty disks makes the next write
        fail first, e.g. on a changelog topic auto-created anew with one
        partition, before the periodic check runs."""
        await loss_first(self.broker_watch.check_or_exit, 10)

    # -- registration events ------------------------------------------------

    async def handle_registration_batch(self, events: Sequence[Any]) -> None:
        """Apply one batch: guard, decode, fold (processors.batch), execute."""
        started = time.perf_counter()
        messages = [ev.message for ev in events]
        await self.skip_guard.check((m.topic, m.partition, m.offset) for m in messages)
        placed, misplaced = batch.split_misplaced(
            (
                batch.Record(m.topic, m.partition, m.offset, m.key, m.value)
                for m in messages
            ),
            self._partitions,
        )
        if misplaced:
            await self._forward(misplaced)
        decoded, rejected = batch.decode(placed)
        cache = self.cache
        states = {
            reg_id: cache.get(reg_id, partition)
            for reg_id, partition in batch.registration_ids(decoded).items()
        }
        if batch.needs_catalog(decoded, states, self.follower.catalog):
            await self.follower.catch_up(self.settings.catalog_catchup_timeout_s)
        catalog = self.follower.catalog
        plan = batch.fold(
            decoded,
            states,
            catalog,
            forecaster=self.forecaster,
            history=self.history,
            exact=self.exact_forecaster,
        )
        # Dead letters and status changes are sent before the new states
        # enter the cache; the next checkpoint awaits their acknowledgement
        # before it stores any state (app/checkpoint.py, steps 2-3).
        self.sends.add(
            await self._send_records(
                [
                    self._dead_letter(r.record, r.reason)
                    for r in (*rejected, *plan.dead)
                ],
                plan.transitions,
            )
        )
        for state in plan.states.values():
            cache.put(state.source_partition, state)
        metrics = self.metrics
        for outcome, n in plan.outcomes.items():
            metrics.events.labels(outcome).inc(n)
        metrics.events.labels("rejected").inc(len(rejected))
        metrics.status_changes.inc(len(plan.transitions))

        projection = Projection(self.keys)
        li_of = {r: s.learning_instance_id for r, s in plan.states.items()}
        for reg_id, goal_id, row in plan.rows:
            projection.row(li_of[reg_id], reg_id, goal_id, row)
        for state in plan.registrations:
            projection.registration(state)
        for reg_id, goal_id, points in plan.history:
            projection.history(li_of[reg_id], reg_id, goal_id, points)
        await self._write_projection(projection)
        for reg_id, keys in plan.provisional.items():
            self._note_provisional(plan.states[reg_id], keys)
        self._observe_batch(started, messages, decoded)

    async def _forward(self, misplaced: Sequence[tuple[batch.Record, int]]) -> None:
        """Send records a producer put on another partition than their key's to
        that partition (acknowledged before this batch's offsets commit); they
        are applied when read there. A crash may forward one twice: attempt
        ids and creation's idempotency make that harmless."""
        futures = [
            await self.registration_topic.send(
                key=record.key, value=record.value, partition=home
            )
            for record, home in misplaced
        ]
        for fut in futures:
            await fut
        self.metrics.events.labels("forwarded").inc(len(misplaced))
        log.info("forwarded %d records to the partition of their key", len(misplaced))

    async def _write_projection(self, projection: Projection) -> None:
        began = time.perf_counter()
        self._redis_writing_since = time.monotonic()
        try:
            await self.projector.write(projection)
        finally:
            self._redis_writing_since = None
        self.metrics.redis_write_seconds.observe(time.perf_counter() - began)

    def _observe_batch(
        self, started: float, messages: Sequence[Any], decoded: Sequence[batch.Decoded]
    ) -> None:
        metrics = self.metrics
        metrics.batch_seconds.observe(time.perf_counter() - started)
        metrics.batch_events.observe(len(messages))
        metrics.cache_entries.set(len(self.cache))
        now = time.time()
        by_record = metrics.freshness.labels("record")
        by_event = metrics.freshness.labels("occurred_at")
        observe_many(
            by_record, [max(0.0, now - m.timestamp) for m in messages if m.timestamp]
        )
        observe_many(
            by_event,
            [max(0.0, now - d.event.occurred_at.timestamp()) for d in decoded],
        )
        last: dict[int, int] = {}
        for m in messages:
            last[m.partition] = m.offset
        highwater = getattr(self.app.consumer, "highwater", None)
        if highwater is not None:
            for partition, offset in last.items():
                tp = next(
                    (
                        tp
                        for tp in self.app.consumer.assignment()
                        if tp.topic == self.topics.registration_events
                        and tp.partition == partition
                    ),
                    None,
                )
                end = highwater(tp) if tp is not None else None
                if end is not None:
                    metrics.lag.labels(str(partition)).set(max(0, end - offset - 1))

    def ready(self) -> str | None:
        """Why the worker is not ready, or None (its /readyz)."""
        if not self._changelog_started:
            return "starting: reading the catalog"
        if self.app.rebalancing or getattr(self.app, "in_recovery", False):
            return "rebalancing or recovering state"
        if not self._assigned_partitions():
            return "no partitions assigned"
        since = self._redis_writing_since
        if since is not None and time.monotonic() - since > 2.0:
            return "Redis: a write has been retried for over 2 s"
        return None

    async def _run_health(self) -> None:
        port = self.settings.metrics_port
        assert port is not None
        server = HealthServer(
            self.metrics, self.ready, self.settings.metrics_host, port
        )
        await server.start()
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

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
            record = batch.Record(
                ev.message.topic,
                ev.message.partition,
                ev.message.offset,
                ev.message.key,
                ev.message.value,
            )
            await self._send_dead_letters(
                [self._dead_letter(record, batch.rejection_reason(exc))]
            )
            return
        # Ownership and the template depend on the catalog as of this record:
        # let the follower reach it first.
        partition, offset = ev.message.partition, ev.message.offset
        if not await self.follower.wait_for_record(
            partition, offset, self.settings.catalog_catchup_timeout_s
        ):
            log.warning(
                "catalog follower behind offset %d: the repair pass projects it",
                offset,
            )
            self._mark_dirty(_ALL)
            return
        reason = self.follower.rejection_at(partition, offset)
        if reason is not None:
            record = batch.Record(
                ev.message.topic, partition, offset, ev.message.key, ev.message.value
            )
            await self._send_dead_letters([self._dead_letter(record, reason)])
            return
        catalog = self.follower.catalog
        projection = Projection(self.keys)
        if isinstance(event, LearningInstanceCreated):
            # The first creation wins (as in the catalog); a repeat by the same
            # partner projects the same.
            li = catalog.learning_instance(event.learning_instance_id)
            projection.learning_instance(li or event)
        elif isinstance(event, GoalDefined):
            goal = catalog.goal(event.goal_id)
            if goal is not None:
                self.forecaster.start_batch()
                projection.goal(goal, self._goal_template(goal), self._goal_names(goal))
        elif isinstance(event, ModuleTagged):
            # Its module's and objectives' names may have changed: the names
            # of the partner's goals are derived again (a cheap write; their
            # rows only when the tags changed, _on_catalog_change).
            for li_id in catalog.learning_instances_of(event.partner_id):
                for goal in catalog.goals_of(li_id):
                    projection.goal_names(goal, self._goal_names(goal))
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
            # mastery depend on module tags: of this partner's rows only.
            for li in self.follower.catalog.learning_instances_of(event.partner_id):
                self._mark_dirty(li)

    # -- checkpoints, rebalances, liveness ----------------------------------

    async def _start_changelog(self) -> None:
        await self.changelog.start()
        self._changelog_started = True

    async def _before_commit(self) -> None:
        # Faust also commits from its fetcher's task, which it cancels when it
        # stops: a checkpoint cancelled there would have taken the dirty
        # states and sends without writing them, so it is shielded and runs
        # to its end (the next checkpoint waits for its lock). Only the
        # commit that asked for it is abandoned, committing nothing; the
        # stop's final commit checkpoints again. A SIGTERM stays exit 0.
        await asyncio.shield(
            asyncio.ensure_future(self._or_exit(self.checkpoint.before_commit()))
        )
        self.heap.after_checkpoint()
        self.metrics.heap_frozen.set(self.heap.frozen())

    async def _on_partitions_revoked(self, *args: Any, **kwargs: Any) -> None:
        # Faust has stopped the streams and committed what it could; write
        # what is still dirty (its offsets come again to the next owner, who
        # recognizes the records by position), then forget the partitions.
        if self._changelog_started:
            await self._or_exit(self.checkpoint.before_commit())
        revoked = args[-1] if args else ()  # the signal's (sender, revoked)
        gone = {
            tp.partition
            for tp in revoked
            if tp.topic == self.topics.registration_events
        }
        dropped = self.cache.evict(gone)
        self._provisional_rows.forget(lambda item: item[1] not in gone)
        if gone:
            log.info("revoked partitions %s: %d cached states evicted", gone, dropped)

    def _assigned_partitions(self) -> list[int]:
        return sorted(
            tp.partition
            for tp in self.app.consumer.assignment()
            if tp.topic == self.topics.registration_events
        )

    # -- re-derivation (goal/module changes, startup repair) ---------------

    def _mark_dirty(self, li_id: str) -> None:
        self._dirty.add(li_id)
        self._dirty_event.set()

    async def _on_before_shutdown(self, *args: Any, **kwargs: Any) -> None:
        await self.skip_guard.stop()
        await self.broker_watch.close()

    async def _on_rebalance_complete(self, *args: Any, **kwargs: Any) -> None:
        # Before the streams resume, perhaps on a new log (app/broker_watch.py).
        await self.broker_watch.check_or_exit()
        log.info("assigned partitions %s", self._assigned_partitions())
        actual = self.app.consumer.topic_partitions(self.topics.registration_events)
        if actual and actual != self._partitions:
            log.warning(
                "%s has %d partitions, MASTERY_TOPIC_PARTITIONS says %d: using %d",
                self.topics.registration_events,
                actual,
                self.settings.topic_partitions,
                actual,
            )
            self._partitions = actual
        self.metrics.rebalances.inc()
        self.skip_guard.reset()
        self._mark_dirty(_ALL)

    async def _run_broker_watch(self) -> None:
        await self.broker_watch.run(self.settings.broker_check_interval_s)

    async def _run_follower(self) -> None:
        await self.follower.run()

    async def _run_read_model_watch(self) -> None:
        """Follow the read model's generation and notice a lost read model.

        Every second (once this worker has materialized its part): when
        ``mastery rebuild --flush`` has switched the generation, write into
        the new one from now on and repair this worker's part of it (the
        rebuild read the changelog, which can be behind the last batches);
        when the current generation's "materialized" marker is gone (Redis
        restarted empty, FLUSHALL), repair it; when ``mastery rebuild``
        rewrote the live generation (its count, ``ReadModelKeys.rebuilds``),
        derive this worker's part again, as the rebuild's changelog can be
        behind. Meanwhile the API answers 503 for ids it cannot find, not 404
        (api/store.py).
        """
        await self.follower.ready.wait()
        base = ReadModelKeys(self.keys.prefix)
        rebuilds: int | None = None  # the count seen at the last check
        while True:
            await asyncio.sleep(1.0)
            if not self._repaired_once:
                continue  # the repair after the first assignment comes first
            try:
                raw, count = await self.redis.mget(
                    base.current_generation(), base.rebuilds()
                )
                generation = int(raw or 0)
                counted = int(count or 0)
                present = await self.redis.exists(
                    base.in_generation(generation).materialized()
                )
            except (RedisError, OSError, ValueError) as exc:
                log.debug("read-model watch: %r", exc)
                continue
            seen, rebuilds = rebuilds, counted
            if generation != self.keys.generation:
                log.warning(
                    "the read model moved to generation %d: writing there, repairing",
                    generation,
                )
                self.keys = base.in_generation(generation)
                self._repaired_once = False
                self._mark_dirty(_ALL)
            elif not present:
                log.warning(
                    "the read model was lost (no materialized marker): repairing"
                )
                self._repaired_once = False
                self._mark_dirty(_ALL)
            elif seen is not None and rebuilds != seen:
                # `mastery rebuild` wrote rows from the changelog, which can
                # be behind this worker's last batches: derive them again.
                log.warning(
                    "mastery rebuild rewrote the read model from the changelog: "
                    "deriving this worker's part again"
                )
                self._repaired_once = False
                self._mark_dirty(_ALL)

    async def _run_rederiver(self) -> None:
        await self.follower.ready.wait()
        while True:
            await self._dirty_event.wait()
            await asyncio.sleep(0.1)  # coalesce bursts of catalog changes
            dirty, self._dirty = self._dirty, set()
            self._dirty_event.clear()
            await self.rederive(dirty)

    async def rederive(self, learning_instances: Iterable[str]) -> int:
        """Recompute and write the rows of local registrations; returns how many.

        With ``"*"`` this is the repair pass run after every partition
        assignment: it also rewrites the registrations' facts and the whole
        catalog's keys, so a flushed or replaced Redis is restored.

        It works in chunks of :data:`_REDERIVE_CHUNK` registrations, each
        under the batch lock and written before the lock is released, so
        batches run between chunks: a re-derivation that one partner's catalog
        change started never holds the others' rows back by more than about a
        batch. Each chunk reads the registrations' *current* states, so a
        batch that ran in between is never overwritten by an older row. A
        rebalance in between ends the pass (the new assignment starts a full
        one).
        """
        wanted = set(learning_instances)
        everything = _ALL in wanted
        partitions = self._assigned_partitions()
        states = self.cache.items(partitions)
        count = 0
        first = True
        while True:
            async with self.lock:
                if self._assigned_partitions() != partitions:
                    log.info("re-derivation ended by a rebalance")
                    return count
                projection = Projection(self.keys)
                self.forecaster.start_batch()
                if first and everything:
                    self._project_catalog(projection)
                first = False
                chunk = list(itertools.islice(states, _REDERIVE_CHUNK))
                for seen in chunk:
                    if not (everything or seen.learning_instance_id in wanted):
                        continue
                    partition = seen.source_partition
                    state = (
                        self.cache.peek(seen.registration_id, partition)
                        if partition in partitions
                        else None
                    ) or seen
                    self._project_rows(state, projection)
                    if everything:
                        projection.registration(state)
                    count += 1
                await self.projector.write(projection)
            if len(chunk) < _REDERIVE_CHUNK:
                break
            await asyncio.sleep(0)  # let the waiting batch take the lock
        if everything:
            # The whole read model of this worker's partitions is written:
            # the API's /readyz may report it present.
            await mark_materialized(
                self.redis, f"worker {self.settings.worker_id}", self.keys
            )
            self._repaired_once = True
        if count:
            log.info("re-derived rows of %d registrations", count)
        return count

    def _project_catalog(self, projection: Projection) -> None:
        catalog = self.follower.catalog
        for li in catalog.learning_instances():
            projection.learning_instance(li)
        for goal in catalog.goals():
            projection.goal(goal, self._goal_template(goal), self._goal_names(goal))

    def _goal_names(self, goal: GoalDefined) -> bytes:
        return goal_names(goal, self.follower.catalog)

    # -- work-remaining forecasts -------------------------------------------

    def _goal_template(self, goal: GoalDefined) -> bytes:
        catalog = self.follower.catalog
        self.forecaster.serve(self._forecast_owner(goal.learning_instance_id))
        template = goal_template(goal, catalog, forecaster=self.forecaster)
        if keys := self.forecaster.take_pending():
            self._provisional_goals.add(goal.goal_id, keys)
            self.forecast_builder.request(
                keys, owner=self._forecast_owner(goal.learning_instance_id)
            )
        return template

    def _project_rows(self, state: RegistrationState, projection: Projection) -> None:
        """Derive the registration's rows into ``projection``; tables its rows
        lacked are requested (re-derivation and :meth:`_on_forecasts_built`)."""
        catalog = self.follower.catalog
        self.forecaster.serve(self._forecast_owner(state.learning_instance_id))
        rows = derive_rows(state, catalog, forecaster=self.forecaster)
        li = state.learning_instance_id
        for goal_id, row in rows:
            projection.row(li, state.registration_id, goal_id, row)
        for goal_id, points in timelines(state):
            projection.history(li, state.registration_id, goal_id, points)
        if keys := self.forecaster.take_pending():
            self._note_provisional(state, keys)

    def _note_provisional(
        self, state: RegistrationState, keys: frozenset[TableKey]
    ) -> None:
        """Rows of ``state`` were derived without these tables: build them."""
        item = (state.registration_id, state.source_partition)
        self._provisional_rows.add(item, keys)
        self.forecast_builder.request(
            keys, owner=self._forecast_owner(state.learning_instance_id)
        )

    def _forecast_owner(self, li_id: str) -> str:
        """Builds are served round-robin per partner: one partner's many
        distinct parameters and thresholds never queue ahead of another's,
        and each partner's tables stay within its share of the budget."""
        return self.follower.catalog.share_owner(li_id)

    async def _run_forecast_builder(self) -> None:
        await self.forecast_builder.run()

    async def _on_forecasts_built(self, keys: frozenset[TableKey]) -> None:
        """Derive again the rows and goal templates that were provisional, in
        chunks under the batch lock (as :meth:`rederive`)."""
        goals = self._provisional_goals.release(keys)
        waiting = iter(sorted(self._provisional_rows.release(keys)))
        while True:
            async with self.lock:
                catalog = self.follower.catalog
                assigned = set(self._assigned_partitions())
                projection = Projection(self.keys)
                self.forecaster.start_batch()
                for goal_id in goals:
                    if (goal := catalog.goal(goal_id)) is not None:
                        projection.goal(
                            goal, self._goal_template(goal), self._goal_names(goal)
                        )
                goals = set()
                chunk = list(itertools.islice(waiting, _REDERIVE_CHUNK))
                for reg_id, partition in chunk:
                    if partition not in assigned:
                        continue
                    state = self.cache.peek(reg_id, partition)
                    if state is None:
                        continue
                    self._project_rows(state, projection)
                await self.projector.write(projection)
            if len(chunk) < _REDERIVE_CHUNK:
                return
            await asyncio.sleep(0)  # let the waiting batch take the lock

    # -- dead letters -------------------------------------------------------

    def _dead_letter(self, record: batch.Record, reason: str) -> DeadLetter:
        log.warning(
            "dead-letter %s/%d/%d: %s",
            record.topic,
            record.partition,
            record.offset,
            reason[:500],
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "key": (record.key or b"")[:128].decode(errors="replace"),
                "outcome": "rejected",
            },
        )
        return DeadLetter.of(
            reason[:2000],
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            rejected_at=datetime.now(UTC),
        )

    async def _send_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        """Dead letters, acknowledged by the broker before this returns."""
        await acknowledged(await self._send_records(dead, ()))

    async def _send_records(
        self, dead: Sequence[DeadLetter], changes: Sequence[StatusChanged]
    ) -> list[Awaitable[Any]]:
        """Send dead letters and status changes; their acknowledgements."""
        if not dead and not changes:
            return []
        self.metrics.dead_letters.inc(len(dead))
        futures = [
            await self.dead_letter_topic.send(
                key=d.dlq_key.encode(), value=d.model_dump_json().encode()
            )
            for d in dead
        ]
        # Keyed by registration: one registration's changes land on one
        # partition in the order they were sent (the fold's log order).
        futures.extend(
            [
                await self.status_topic.send(
                    key=c.registration_id.encode(), value=c.to_bytes()
                )
                for c in changes
            ]
        )
        return futures


def create_worker(
    settings: Settings, profile: BrokerProfile, bootstrap: str, redis_url: str
) -> Worker:
    """Build the worker (does not start it)."""
    return Worker(settings, profile, bootstrap, redis_url)
