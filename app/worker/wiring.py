"""The worker: the Faust app, its topics and agents, wired to the pieces
that do the work.

- app/worker/pipeline.py turns a batch of registration events into a plan (guard,
  decode, fold); app/worker/effects.py carries the plan out (sends, state cache,
  rows); app/worker/checkpoint.py stores the states and acks what it stored;
- app/worker/catalog_follower.py is the catalog topic's one reader;
  app/worker/catalog_projection.py projects what it applies and
  app/worker/catalog_dead_letters.py dead-letters what it refused;
  app/worker/repairer.py
  derives rows again (catalog changes, repair passes, forecasts built) and
  follows the read model's generation;
- app/worker/outbox.py sends dead letters, status changes and forwarded records;
- app/worker/worker_health.py answers /readyz and counts each batch;
- app/worker/failures.py says which failure gets which exit, and
  app/worker/faust_corrections/ holds every correction of Faust.

What stays here is the wiring and the control flow: when a batch runs, when
a checkpoint runs, what a rebalance does, and how a failure ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from app.metrics import WorkerMetrics
from app.worker.broker_watch import (
    BrokerWatch,
    loss_first,
    process_name,
    report_consistency_errors,
)
from app.worker.catalog_dead_letters import (
    CatalogDeadLetters,
    agent_position,
    duty_group,
)
from app.worker.catalog_follower import CatalogEventT, CatalogFollower
from app.worker.catalog_projection import CatalogProjection
from app.worker.checkpoint import ChangelogWriter, Checkpoint, PendingSends
from app.worker.effects import EffectExecutor
from app.worker.failures import InternalErrors
from app.worker.faust_corrections.exit_policy import (
    BatchCancelled,
    BatchFailed,
    WorkerExit,
    access_denied,
    exit_process,
)
from app.worker.faust_corrections.guards import GroupProbes, SkipGuard
from app.worker.faust_corrections.store import PartitionStore
from app.worker.faust_corrections.streams import take_ready
from app.worker.faust_corrections.transport import MasteryApp
from app.worker.heap import HeapFreezer
from app.worker.heartbeat import Heartbeat
from app.worker.outbox import Outbox
from app.worker.pipeline import RegistrationPipeline
from app.worker.repairer import ALL, Repairer
from app.worker.state_cache import StateCache
from app.worker.worker_health import WorkerHealth
from infra.broker import BrokerProfile
from infra.kafka_security import faust_broker_credentials, kafka_client_kwargs
from infra.read_model import RedisProjector
from infra.redis_client import redis_client
from infra.settings import Settings
from infra.topic_names import TopicNames
from processors.forecast import MIN_BUDGET_BYTES, ForecastTables
from processors.forecaster import DeferredForecaster, SynchronousForecaster
from processors.history import HistoryPolicy

__all__ = ["Worker", "create_worker"]

log = logging.getLogger(__name__)


class Worker:
    """Owns the Faust app and wires everything its agents use."""

    def __init__(
        self, settings: Settings, profile: BrokerProfile, bootstrap: str, redis_url: str
    ):
        self.settings = settings
        self.topics = TopicNames(settings.topic_prefix)
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
            group_id=duty_group(settings.worker_id),
        )
        #: Held by a batch, and by each chunk of a re-derivation.
        self.lock = asyncio.Lock()

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
        registration_topic = self._raw_topic(self.topics.registration_events)
        # Faust's table: its changelog, RocksDB and recovery, not its mapping
        # (docs/reliability.md, "Why Faust's table is only ...").
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
        self.metrics = WorkerMetrics()
        self.outbox = Outbox(
            dead_letters=self._raw_topic(self.topics.dead_letter),
            status_changes=self._raw_topic(self.topics.status_changes),
            registration_events=registration_topic,
            metrics=self.metrics,
        )
        self.changelog = ChangelogWriter(
            bootstrap,
            self.states.changelog_topic.get_topic_name(),
            profile,
            client_kwargs=client_kwargs,
        )
        self.sends = PendingSends()
        self.checkpoint = Checkpoint(
            self.cache,
            self.store,
            self.changelog,
            sends=self.sends,
            on_done=lambda seconds, _: self.metrics.commit_seconds.observe(seconds),
        )
        #: Set when a checkpoint should run now, not at its interval.
        self._checkpoint_now = asyncio.Event()
        self.app.on_flow_stopped = self._checkpoint_now.set
        self.heap = HeapFreezer()

        # Work-remaining forecasts (docs/analytics.md, section 4): rows are
        # derived from the tables held; a missing table gives a provisional
        # row, is built off the loop's critical path, and the rows that
        # waited for it are derived again. Each partner's share of the tables
        # and of the inline builds: docs/operations.md, "Shared pools and
        # each partner's share".
        budget = settings.forecast_cache_mb * 2**20
        share = settings.forecast_partner_share_percent
        forecast_tables = ForecastTables(
            budget,
            owner_share_bytes=max(budget * share // 100, MIN_BUDGET_BYTES),
        )
        self.forecaster = DeferredForecaster(
            forecast_tables,
            inline_builds=settings.forecast_inline_builds,
            inline_builds_per_owner=-(-settings.forecast_inline_builds * share // 100),
        )
        self.repairer = Repairer(
            redis=self.redis,
            projector=self.projector,
            follower=self.follower,
            cache=self.cache,
            lock=self.lock,
            forecast_tables=forecast_tables,
            forecaster=self.forecaster,
            assigned_partitions=self._assigned_partitions,
            by=f"worker {settings.worker_id}",
        )
        self.catalog = CatalogProjection(
            follower=self.follower,
            projector=self.projector,
            repairer=self.repairer,
            forecaster=self.forecaster,
        )
        # The worker holding partition 0 dead-letters refused catalog records.
        self.catalog_dead_letters = CatalogDeadLetters(
            self.follower,
            self.outbox,
            holds_duty=lambda: 0 in self._assigned_partitions(),
            previous_position=lambda: agent_position(
                bootstrap, settings.worker_id, self.topics.catalog, client_kwargs
            ),
        )
        self._changelog_started = False
        self.health = WorkerHealth(
            self.metrics,
            self.app,
            self.topics.registration_events,
            started=lambda: self._changelog_started,
            assigned_partitions=self._assigned_partitions,
        )
        probes = GroupProbes(bootstrap, settings.worker_id, profile, client_kwargs)
        self.skip_guard = SkipGuard(probes)
        #: Partitions of the registration-events topic (the broker's count
        #: once known: the key -> partition rule depends on it).
        self._partitions = settings.topic_partitions
        self.pipeline = RegistrationPipeline(
            skip_guard=self.skip_guard,
            outbox=self.outbox,
            cache=self.cache,
            follower=self.follower,
            forecaster=self.forecaster,
            # Timelines' points use exact forecasts (the same tables), never a
            # provisional one: they are kept, not derived again
            # (processors/history.py).
            exact=SynchronousForecaster(forecast_tables),
            history=HistoryPolicy(interval_us=settings.history_interval_s * 10**6),
            internal_errors=InternalErrors(),
            partitions=lambda: self._partitions,
            catalog_catchup_timeout_s=settings.catalog_catchup_timeout_s,
        )
        self.effects = EffectExecutor(
            outbox=self.outbox,
            sends=self.sends,
            cache=self.cache,
            metrics=self.metrics,
            projector=self.projector,
            health=self.health,
            repairer=self.repairer,
        )
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

        self.app.agent(registration_topic, name="registration-events")(
            self._registration_agent
        )
        self.app.task(self.follower.run)
        self.app.task(self._run_catalog_dead_letters)
        self.app.task(self._run_checkpoints)
        self.app.task(self.repairer.run)
        self.app.task(self.repairer.forecast_builder.run)
        self.app.task(self.repairer.watch_read_model)
        self.app.task(self._run_broker_watch)
        self.app.task(self.heartbeat.run)
        if settings.metrics_port is not None:
            self.app.task(self._run_health)
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)
        self.app.on_before_shutdown.connect(self._on_before_shutdown)

    def _raw_topic(self, name: str) -> Any:
        return self.app.topic(name, key_serializer="raw", value_serializer="raw")

    # -- agents -------------------------------------------------------------

    async def _registration_agent(self, stream: Any) -> None:
        await self.follower.ready.wait()
        await self.changelog.start()
        self._changelog_started = True
        within = self.settings.batch_within_ms / 1000
        batches = take_ready(stream, self.settings.batch_max_events, within)
        async with contextlib.aclosing(batches):
            async for events in batches:
                async with self.lock:
                    await self._or_exit(self.handle_registration_batch(events))
                # Acked once the checkpoint has stored their states.
                self.checkpoint.applied(events)
                if not self.app.flow_control.is_active():
                    self._checkpoint_now.set()  # Faust waits for their acks

    async def handle_registration_batch(self, events: Sequence[Any]) -> None:
        """Apply one batch: plan it (app/worker/pipeline.py), carry the plan out
        (app/worker/effects.py)."""
        started = time.perf_counter()
        planned = await self.pipeline.plan(events)
        await self.effects.execute(planned)
        self.health.observe_batch(
            started, planned.messages, planned.decoded, len(self.cache)
        )

    async def _on_catalog_change(
        self, event: CatalogEventT, changed: bool, live: bool
    ) -> None:
        await self._or_exit(self.catalog.on_change(event, changed, live), batch=False)

    async def _run_catalog_dead_letters(self) -> None:
        while True:
            await self._or_exit(self.catalog_dead_letters.run_once(), batch=False)
            await asyncio.sleep(self._checkpoint_interval_s)

    # -- failures -----------------------------------------------------------

    async def _or_exit(self, work: Awaitable[object], *, batch: bool = True) -> None:
        """Run one unit of work; on any failure end the process, acking nothing
        (app/worker/failures.py says which failure gets which exit).

        Crash-only (exit_policy.py): a batch that failed half-way may have put
        some of its effects in place; its restart reads its records again.
        Work that is not a ``batch`` may be cancelled half-way: it is done
        again from what was committed.
        """
        try:
            await work
        except WorkerExit as exc:
            await self._loss_first()
            # A checkpoint's send refused for a missing ACL is 77 too.
            exit_process(access_denied(exc) or exc)
        except asyncio.CancelledError:
            if not batch:
                raise
            # Cancelled mid-batch or mid-checkpoint (shutdown or rebalance):
            # what it did is not known whole; its records come again.
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

    # -- checkpoints --------------------------------------------------------

    @property
    def _checkpoint_interval_s(self) -> float:
        settings = self.settings
        return settings.checkpoint_interval_s or settings.commit_interval_s

    async def _run_checkpoints(self) -> None:
        """Checkpoint every ``checkpoint_interval_s`` seconds (by default
        ``commit_interval_s``), and at once when Faust stops the consumer's
        flow: a rebalance or a shutdown then waits for every event to be
        acked (app/worker/checkpoint.py, step 2)."""
        interval = self._checkpoint_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._checkpoint_now.wait(), interval)
            self._checkpoint_now.clear()
            if not self.checkpoint.idle:
                await self._checkpoint()

    async def _checkpoint(self) -> None:
        # Shielded: a checkpoint cancelled half-way (the app stopping its
        # tasks) would have taken the dirty states and events without
        # writing or acking them; it runs to its end, or ends the process.
        await asyncio.shield(
            asyncio.ensure_future(self._or_exit(self.checkpoint.run()))
        )
        self.heap.after_checkpoint()
        self.metrics.heap_frozen.set(self.heap.frozen())

    # -- rebalances and lifecycle -------------------------------------------

    def _assigned_partitions(self) -> list[int]:
        return sorted(
            tp.partition
            for tp in self.app.consumer.assignment()
            if tp.topic == self.topics.registration_events
        )

    async def _on_partitions_revoked(self, *args: Any, **kwargs: Any) -> None:
        # Faust has stopped the streams and committed what was acked; write
        # what is still dirty (its offsets come again to the next owner, who
        # recognizes the records by position), then forget the partitions.
        if self._changelog_started:
            await self._checkpoint()
        revoked = args[-1] if args else ()  # the signal's (sender, revoked)
        gone = {
            tp.partition
            for tp in revoked
            if tp.topic == self.topics.registration_events
        }
        dropped = self.cache.evict(gone)
        self.repairer.forget(gone)
        if gone:
            log.info("revoked partitions %s: %d cached states evicted", gone, dropped)

    async def _on_rebalance_complete(self, *args: Any, **kwargs: Any) -> None:
        # Before the streams resume, perhaps on a new log (app/worker/broker_watch.py).
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
        self.repairer.mark_dirty(ALL)

    async def _on_before_shutdown(self, *args: Any, **kwargs: Any) -> None:
        await self.skip_guard.stop()
        await self.broker_watch.close()

    async def _run_broker_watch(self) -> None:
        await self.broker_watch.run(self.settings.broker_check_interval_s)

    async def _run_health(self) -> None:
        port = self.settings.metrics_port
        assert port is not None
        await self.health.serve(self.settings.metrics_host, port)

    def ready(self) -> str | None:
        """Why the worker is not ready, or None (its /readyz)."""
        return self.health.ready()


def create_worker(
    settings: Settings, profile: BrokerProfile, bootstrap: str, redis_url: str
) -> Worker:
    """Build the worker (does not start it)."""
    return Worker(settings, profile, bootstrap, redis_url)
