"""Notice that the broker lost records this deployment had already read.

A broker that lost its disks (or a topic created again, an unclean leader
election) would have the workers fold new events onto states the log no
longer holds. The rule (processors/broker_log.py): a partition's end offset
never decreases while the log is intact. :class:`BrokerWatch` keeps the
highest end offsets seen in Redis and compares before the worker starts,
after every assignment and every few seconds; a confirmed loss is reported
in Redis and ends the worker with :class:`BrokerLostData` (65, not
restarted) until ``mastery broker-reset`` (:func:`reset`). Faust's own
``ConsistencyError`` gets the same outcome (:func:`report_consistency_errors`).
docs/operations.md, "The broker restarted empty", is the runbook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from aiokafka.protocol.metadata import MetadataRequest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.worker.faust_corrections.exit_policy import BrokerLostData, exit_process
from infra.broker import BrokerProfile, end_offsets, profile_for
from infra.kafka_security import kafka_client_kwargs
from infra.read_model import ReadModelKeys
from infra.redis_client import redis_client
from infra.settings import Settings
from infra.topic_names import TopicNames
from processors.broker_log import field_name, lost_partitions, parse_field
from schemas.broker_status import BrokerLoss, LostPartition

__all__ = [
    "BrokerWatch",
    "changelog_topic",
    "check_before_start",
    "loss_first",
    "process_name",
    "report_consistency_errors",
    "reset",
    "watched_topics",
]

log = logging.getLogger(__name__)

#: HSET each field only upward: workers record concurrently.
_RECORD_MAX_LUA = """
for i = 1, #ARGV, 2 do
  local old = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > old then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""

#: Errors that mean "cannot tell now", not "lost": the next check retries.
UNREACHABLE = (KafkaError, RedisError, OSError, TimeoutError)

Ends = dict[tuple[str, int], int]

#: UNKNOWN_TOPIC_OR_PARTITION in a topic's metadata: the topic does not exist.
_UNKNOWN_TOPIC = 3


def changelog_topic(worker_id: str, table: str = "registration-state") -> str:
    """The changelog topic Faust names for a table of app ``worker_id``."""
    return f"{worker_id}-{table}-changelog"


def watched_topics(settings: Settings) -> list[str]:
    """The topics whose end offsets are watched: those workers read and write."""
    names = TopicNames(settings.topic_prefix)
    return [
        names.registration_events,
        names.catalog,
        names.dead_letter,
        names.status_changes,
        changelog_topic(settings.worker_id),
    ]


class BrokerWatch:
    """Compares the broker's end offsets with the highest ones seen (module doc)."""

    def __init__(
        self,
        redis: Redis,
        bootstrap: str,
        topics: Sequence[str],
        *,
        by: str,
        profile: BrokerProfile,
        keys: ReadModelKeys | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        confirm_after_s: float = 1.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.redis = redis
        self.topics = tuple(topics)
        self.by = by
        self.keys = keys or ReadModelKeys()
        self._bootstrap = bootstrap
        self._profile = profile
        self._client_kwargs = dict(client_kwargs or {})
        self._confirm_after_s = confirm_after_s
        self._timeout_s = timeout_s
        self._record_max = redis.register_script(_RECORD_MAX_LUA)
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        # The periodic check and the one after an assignment may overlap.
        self._clients_lock = asyncio.Lock()

    async def check(self) -> None:
        """Raise :class:`BrokerLostData` if a loss is reported or found now;
        otherwise record the broker's end offsets as seen. Raises one of
        :data:`UNREACHABLE` when the broker or Redis cannot be asked."""
        async with asyncio.timeout(self._timeout_s * 2 + self._confirm_after_s):
            reported = await self.reported()
            if reported is not None:
                raise BrokerLostData(
                    f"a broker loss was reported earlier and not cleared: "
                    f"{reported.describe()} (clear it with `mastery broker-reset` "
                    "once dealt with)"
                )
            # Seen first, then the broker: ends read later are never below
            # ends another worker recorded earlier, unless records were lost.
            seen = await self.seen()
            now = await self.end_offsets()
            if lost_partitions(seen, now, topics=self.topics):
                await asyncio.sleep(self._confirm_after_s)
                now = await self.end_offsets()
                lost = lost_partitions(seen, now, topics=self.topics)
                if lost:
                    raise await self._report(lost)
            await self.record(now)

    @classmethod
    def of_worker(
        cls,
        settings: Settings,
        redis: Redis,
        bootstrap: str,
        profile: BrokerProfile | None = None,
    ) -> BrokerWatch:
        """The watch of a worker configured by ``settings``."""
        return cls(
            redis,
            bootstrap,
            watched_topics(settings),
            by=process_name(settings.worker_id),
            profile=profile or profile_for(settings),
            client_kwargs=kafka_client_kwargs(settings),
        )

    async def check_or_exit(self, *, level: int = logging.WARNING) -> None:
        """:meth:`check`; on a loss end the process (code 65). When the broker
        or Redis cannot be asked, log it at ``level`` and carry on: the next
        check repeats it."""
        try:
            await self.check()
        except BrokerLostData as exc:
            exit_process(exc)
        except UNREACHABLE as exc:
            log.log(level, "could not compare the broker's end offsets: %r", exc)

    async def run(self, interval_s: float) -> None:
        """Check every ``interval_s``; on a loss end the process (code 65)."""
        while True:
            await asyncio.sleep(interval_s)
            await self.check_or_exit(level=logging.DEBUG)

    async def reported(self) -> BrokerLoss | None:
        """The loss reported earlier (by any worker), if not cleared."""
        raw = await self.redis.get(self.keys.broker_loss())
        return None if raw is None else BrokerLoss.stored(raw)

    async def seen(self) -> Ends:
        """The highest end offsets recorded, by topic and partition."""
        raw = await self.redis.hgetall(self.keys.broker_offsets())
        ends: Ends = {}
        for field, value in raw.items():
            tp = parse_field(field.decode() if isinstance(field, bytes) else field)
            if tp is not None and tp[0] in self.topics:
                ends[tp] = int(value)
        return ends

    async def record(self, ends: Mapping[tuple[str, int], int]) -> None:
        """Raise the recorded end offsets to ``ends`` (never lowers one)."""
        args: list[str | int] = []
        for (topic, partition), end in ends.items():
            args += [field_name(topic, partition), end]
        if args:
            await self._record_max(keys=[self.keys.broker_offsets()], args=args)

    async def end_offsets(self) -> Ends:
        """The end offsets of every partition of the watched topics that
        exists. Raises :class:`KafkaError` when
        the broker cannot say (a topic's metadata carries an error)."""
        try:
            async with self._clients_lock, asyncio.timeout(self._timeout_s):
                admin, consumer = await self._clients()
                # All topics, not named ones: asking for a named topic could
                # make a broker that auto-creates topics create it.
                described = await admin.describe_topics()
                tps: list[TopicPartition] = []
                for t in described:
                    if t["topic"] not in self.topics:
                        continue
                    if t["error_code"] == _UNKNOWN_TOPIC:
                        continue  # gone: its partitions count as end 0
                    if t["error_code"]:
                        raise KafkaError(
                            f"metadata of {t['topic']}: error {t['error_code']}"
                        )
                    tps += [
                        TopicPartition(t["topic"], p["partition"])
                        for p in t["partitions"]
                    ]
                listed = {t["topic"] for t in described}
                await self._check_absent([t for t in self.topics if t not in listed])
                if not tps:
                    return {}
                ends = await end_offsets(
                    consumer, tps, timeout_s=max(1.0, self._timeout_s - 1.0)
                )
        except BaseException:
            await self.close()  # reconnect from scratch next time
            raise
        return {(tp.topic, tp.partition): int(end) for tp, end in ends.items()}

    async def _check_absent(self, topics: list[str]) -> None:
        """Raise ``TopicAuthorizationFailedError`` if a watched topic is
        missing from the all-topics metadata because this principal may not
        describe it (an ACL is missing), not because it is gone: the broker
        leaves both out, and only the second is a loss. Asked by name with
        topic auto-creation off (aiokafka's admin client cannot turn it off)."""
        if not topics:
            return
        client = AIOKafkaClient(
            bootstrap_servers=self._bootstrap,
            request_timeout_ms=int(self._timeout_s * 1000),
            **self._client_kwargs,
        )
        try:
            await client.bootstrap()
            response = await client.send(
                client.get_random_node(),
                MetadataRequest(topics, allow_auto_topic_creation=False),
            )
        finally:
            await client.close()
        for topic in response.to_object()["topics"]:
            if topic["error_code"] == TopicAuthorizationFailedError.errno:
                raise TopicAuthorizationFailedError(topic["topic"])

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        """One admin client and one consumer (no group), started on first use
        and again after a failure."""
        if self._admin is None or self._consumer is None:
            timeout_ms = int(self._timeout_s * 1000)
            self._admin = AIOKafkaAdminClient(
                bootstrap_servers=self._bootstrap,
                request_timeout_ms=timeout_ms,
                **self._client_kwargs,
            )
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                enable_auto_commit=False,
                request_timeout_ms=timeout_ms,
                **self._client_kwargs,
            )
            await self._admin.start()
            await self._consumer.start()
        return self._admin, self._consumer

    async def close(self) -> None:
        """Stop the Kafka clients (they start again when needed)."""
        admin, self._admin = self._admin, None
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(*UNREACHABLE, RuntimeError):
                await consumer.stop()
        if admin is not None:
            with contextlib.suppress(*UNREACHABLE, RuntimeError):
                await admin.close()

    async def _report(self, lost: Sequence[LostPartition]) -> BrokerLostData:
        return await self.report(
            BrokerLoss(
                by=self.by,
                at=datetime.now(UTC),
                reason="the broker lost records this deployment had already read "
                "(it restarted empty, or topics were deleted and created again)",
                lost=tuple(lost),
            )
        )

    async def report(self, loss: BrokerLoss) -> BrokerLostData:
        """Store ``loss`` for the API (the first report stays), log it, and
        return the exception that ends the worker."""
        try:
            await self.redis.set(
                self.keys.broker_loss(), loss.model_dump_json(), nx=True
            )
        except (RedisError, OSError) as exc:
            log.error("could not store the broker loss in Redis: %r", exc)
        log.error(
            "BROKER LOST DATA: %s. Events accepted from now on would be applied "
            "without the learning instances, registrations and states the lost "
            "records held. The worker stops and is not restarted; ingest answers "
            "503. What to do: %s",
            loss.describe(),
            loss.runbook,
            extra={"outcome": "broker_lost_data"},
        )
        return BrokerLostData(loss.describe())


def report_consistency_errors(app: Any, watch: BrokerWatch, data_dir: str) -> None:
    """Turn Faust's ``ConsistencyError`` (raised by table recovery when the
    local store has read further than the changelog now reaches,
    app/worker/faust_corrections/recovery.py) into a reported broker loss and exit
    code 65."""
    # Imported here: the API imports this module and never loads Faust.
    from app.worker.faust_corrections.recovery import on_consistency_error

    async def report(reason: BaseException) -> None:
        # The broker watch's own comparison names every partition that lost
        # records (and the runbook); it ends the process when it finds one.
        # Only when it finds nothing is Faust's reason the report.
        await loss_first(watch.check_or_exit, 10)
        faust_says = " ".join(str(reason).split())
        exit_process(
            await watch.report(
                BrokerLoss(
                    by=watch.by,
                    at=datetime.now(UTC),
                    reason=f"the local store has read further than the "
                    f"changelog now reaches ({faust_says}): the broker lost "
                    "records, or the data folder belongs to another cluster; "
                    f"once the loss is accepted, delete {data_dir}",
                )
            )
        )

    on_consistency_error(app, report)


async def reset(watch: BrokerWatch) -> tuple[BrokerLoss | None, Ends]:
    """``mastery broker-reset``: accept the broker's log as it is now. Deletes
    the reported loss and replaces the recorded end offsets of the watched
    topics with the current ones; returns what was reported and the new record."""
    redis = watch.redis
    reported = await watch.reported()
    seen = await watch.seen()
    try:
        now = await watch.end_offsets()
    finally:
        await watch.close()
    keys = watch.keys
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.broker_loss())
        if seen:
            pipe.hdel(keys.broker_offsets(), *(field_name(*tp) for tp in seen))
        if now:
            pipe.hset(
                keys.broker_offsets(),
                mapping={field_name(*tp): end for tp, end in now.items()},
            )
        await pipe.execute()
    return reported, now


def process_name(worker_id: str) -> str:
    """How a worker names itself in reports."""
    return f"worker {worker_id} (pid {os.getpid()})"


async def check_before_start(
    settings: Settings, bootstrap: str, redis_url: str
) -> None:
    """``mastery worker``, before it creates missing topics: end the process
    (code 65) if a loss is reported or found (:meth:`BrokerWatch.check_or_exit`)."""
    redis = redis_client(redis_url, cluster=settings.redis_cluster, socket_timeout=5.0)
    watch = BrokerWatch.of_worker(settings, redis, bootstrap)
    try:
        await watch.check_or_exit()
    finally:
        await watch.close()
        await redis.aclose()


async def loss_first(check: Callable[[], Awaitable[None]], timeout_s: float) -> None:
    """Run ``check`` (a broker-loss check that exits 65 on a loss) before a
    failure ends the process, so that a broker restarted on empty disks is
    reported as the cause; a check that fails or takes longer than
    ``timeout_s`` is ignored, and the failure's own exit follows."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout_s):
            await check()
