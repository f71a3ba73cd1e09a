"""``mastery notifier``: delivers status changes to the partners' webhooks.

Two stages, so that a slow or failing endpoint delays nobody else's: an
intake consumer appends each status change to the Redis outbox of every
matching subscription (offsets committed after the appends), and each outbox
is delivered in order, one request at a time, by the one notifier holding
its lease; the head goes only once delivered or dead-lettered, so a crash
sends it again with the same ``webhook-id``. Requests follow no redirects and
connect only to addresses :func:`infra.webhooks.refusal` allows, checked at
connection time. docs/webhooks.md ("Delivery", "Retries", "Outbox bound")
has the details; metrics and ``/readyz``: app/notifier/metrics.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from app.metrics import HealthServer
from app.notifier.metrics import NotifierMetrics, NotifierProbe
from infra.broker import BrokerProfile
from infra.kafka_security import kafka_client_kwargs
from infra.redis_client import redis_client
from infra.settings import Settings
from infra.topic_names import TopicNames
from infra.webhook_store import RedisWebhookStore
from infra.webhooks import next_delay, refusal, webhook_request
from schemas.transitions import StatusChanged
from schemas.webhooks import (
    MAX_ERROR_CHARS,
    STATUS_CHANGED_TYPE,
    DeliveryAttempt,
    RedeliveryRequest,
    Subscription,
)

__all__ = ["Notifier", "PublicResolver", "literal_refusal", "notifier_group"]

log = logging.getLogger(__name__)

#: A partner's subscriptions are read again after this long (a new
#: subscription gets the status changes read from then on).
SUBSCRIPTIONS_TTL_S = 1.0
#: How often the notifier looks for subscriptions without a holder.
SCAN_INTERVAL_S = 0.5
#: The longest an outbox read blocks, in milliseconds.
OUTBOX_BLOCK_MS = 500


# KEYS: subscriptions, outbox. ARGV: id, change, bound. Appends only to the
# outbox of a subscription that exists (a deleted one's outbox is gone for
# good) and holds fewer than the bound: 1 appended, 0 no such subscription,
# -1 the outbox is full (nothing appended; the caller dead-letters it).
_ENQUEUE_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
redis.call('XADD', KEYS[2], '*', 't', ARGV[2])
return 1
"""

# KEYS: subscriptions, retry. ARGV: id, then field/value pairs. Keeps the
# retry state only of a subscription that exists.
_RETRY_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
return 1
"""

# KEYS: lease. ARGV: holder, ms. 1 if extended, 0 if another holds it (or
# nobody: it expired, and a scan may take it again).
_EXTEND_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


def literal_refusal(url: str) -> str | None:
    """Why ``url``'s host, an IP address, may not receive webhooks; ``None``
    for a public address or a host name (:class:`PublicResolver` checks
    those when it connects)."""
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    return refusal(address)


def notifier_group(settings: Settings) -> str:
    """The intake's consumer group (under the ``<app-id>-`` prefix)."""
    return f"{settings.worker_id}-notifier"


class PublicResolver(AbstractResolver):
    """Resolves like the system and drops the addresses webhooks may not go
    to; none left is a connection error naming why."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await self._loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, family=family
        )
        results: list[ResolveResult] = []
        refused: list[str] = []
        for fam, _, proto, _, sockaddr in infos:
            address = str(sockaddr[0])
            why = refusal(ipaddress.ip_address(address.partition("%")[0]))
            if why is not None:
                refused.append(why)
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=int(sockaddr[1]),
                    family=fam,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        if not results:
            raise OSError(
                f"{host} resolves to no public address ({'; '.join(refused)})"
                if refused
                else f"{host} does not resolve"
            )
        return results

    async def close(self) -> None:
        return None


@dataclass(slots=True)
class _Outcome:
    delivered: bool
    status_code: int | None
    response: str | None
    duration_ms: float


@dataclass(slots=True)
class NotifierStats:
    """What the notifier did (logged; tests read them)."""

    enqueued: int = 0
    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    #: changes refused at intake by a full outbox (dead-lettered)
    outbox_full: int = 0
    redelivered: int = 0
    undecodable: int = 0
    held: set[str] = field(default_factory=set)


class Notifier:
    """The intake and the deliveries of one notifier process."""

    def __init__(
        self,
        settings: Settings,
        profile: BrokerProfile,
        bootstrap: str,
        redis_url: str,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.bootstrap = bootstrap
        self.redis = redis_client(
            redis_url, cluster=settings.redis_cluster, socket_timeout=10.0
        )
        self.store = RedisWebhookStore(self.redis)
        self.keys = self.store.keys
        self.topic = TopicNames(settings.topic_prefix).status_changes
        self.clock = clock
        self.rng = rng or random.Random()
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = NotifierStats()
        self._subs: dict[str, tuple[float, list[Subscription]]] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._extend = self.redis.register_script(_EXTEND_LUA)
        self._append = self.redis.register_script(_ENQUEUE_LUA)
        self._keep_retry = self.redis.register_script(_RETRY_LUA)
        self._consumer: AIOKafkaConsumer | None = None
        self.metrics = NotifierMetrics()
        self.metrics.outbox_max.set(settings.notifier_outbox_max)
        self.metrics.held.set_function(lambda: len(self.stats.held))
        self.probe = NotifierProbe(
            self.metrics, self.redis, self._held_outboxes, lambda: self._consumer
        )

    # -- the process ----------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop`; a failure of either stage ends the run."""
        connector = aiohttp.TCPConnector(
            limit=0,
            resolver=None
            if self.settings.webhooks_allow_private_urls
            else (PublicResolver()),
        )
        self._http = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.notifier_timeout_s),
        )
        health: HealthServer | None = None
        try:
            if self.settings.metrics_port is not None:
                health = HealthServer(
                    self.metrics,
                    self.probe.ready,
                    self.settings.metrics_host,
                    self.settings.metrics_port,
                    process="notifier",
                )
                await health.start()
            intake = asyncio.create_task(self._intake(), name="notifier-intake")
            scan = asyncio.create_task(self._scan(), name="notifier-scan")
            probe = asyncio.create_task(self.probe.run(), name="notifier-probe")
            stop = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait(
                {intake, scan, probe, stop}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in (intake, scan, probe, stop, *self._tasks.values()):
                task.cancel()
            await asyncio.gather(
                intake, scan, probe, stop, *self._tasks.values(), return_exceptions=True
            )
            for task in done:
                if task is not stop and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            if health is not None:
                await health.stop()
            await self._release_all()
            await self._http.close()
            await self.redis.aclose()

    def stop(self) -> None:
        self._stopping.set()

    # -- 1. intake ------------------------------------------------------------

    async def _intake(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=notifier_group(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            **kafka_client_kwargs(self.settings),
        )
        await consumer.start()
        self._consumer = consumer
        log.info("notifier %s reads %s", self.me, self.topic)
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=2000)
                if not batch:
                    continue
                await self._enqueue(
                    [
                        (r.value or b"", r.timestamp)
                        for records in batch.values()
                        for r in records
                    ]
                )
                await consumer.commit()
        finally:
            self._consumer = None
            await consumer.stop()

    async def _enqueue(self, records: list[tuple[bytes, int]]) -> None:
        """Append each status change (its bytes, its record's timestamp in ms)
        to the outboxes of its partner's subscriptions made before the worker
        wrote it: a new subscription, or a first notifier on an old topic,
        does not get the changes of the past.

        An outbox at ``MASTERY_NOTIFIER_OUTBOX_MAX`` refuses the change (in
        the append's script, so the check and the append are one step) and
        the change is dead-lettered here (:meth:`_refuse`), before the
        intake commits: a crash in between takes the records in again."""
        pipe = self.redis.pipeline(transaction=False)
        queued: list[tuple[Subscription, StatusChanged]] = []
        bound = self.settings.notifier_outbox_max
        self.metrics.changes.inc(len(records))
        for raw, written_ms in records:
            try:
                change = StatusChanged.from_bytes(raw)
            except ValidationError as exc:
                # The worker writes this topic: an undecodable record is a bug
                # to see, not a reason to stop every partner's deliveries.
                self.stats.undecodable += 1
                self.metrics.undecodable.inc()
                log.error("undecodable status change skipped: %s", exc)
                continue
            for sub in await self._subscriptions(change.partner_id):
                if (
                    STATUS_CHANGED_TYPE in sub.event_types
                    and written_ms >= sub.created_at.timestamp() * 1000
                ):
                    await self._append(
                        keys=[
                            self.keys.subscriptions(sub.partner_id),
                            self.keys.outbox(sub.partner_id, sub.id),
                        ],
                        args=[sub.id, raw, bound],
                        client=pipe,
                    )
                    queued.append((sub, change))
        if not queued:
            return
        answers = await pipe.execute()
        appended = sum(1 for answer in answers if int(answer) == 1)
        self.stats.enqueued += appended
        self.metrics.appends.inc(appended)
        full = [q for q, answer in zip(queued, answers, strict=True) if int(answer) < 0]
        if full:
            await self._refuse(full)

    async def _refuse(self, full: list[tuple[Subscription, StatusChanged]]) -> None:
        """Dead-letter changes their full outboxes refused: recorded in
        ``GET …/deliveries`` with the change (so ``redeliver`` can send it),
        counted, and logged once per subscription."""
        at = datetime.fromtimestamp(self.clock(), UTC)
        bound = self.settings.notifier_outbox_max
        why = _Outcome(
            False,
            None,
            f"outbox full: {bound} changes waiting (MASTERY_NOTIFIER_OUTBOX_MAX); "
            "not sent, redeliver to send it",
            0.0,
        )
        await self.store.record_deliveries(
            (sub.partner_id, sub.id, _attempt(change, 1, at, "dead_lettered", why))
            for sub, change in full
        )
        self.stats.outbox_full += len(full)
        self.metrics.outcome["outbox_full"].inc(len(full))
        refused: dict[str, int] = {}
        for sub, _ in full:
            refused[sub.id] = refused.get(sub.id, 0) + 1
        for webhook_id, n in refused.items():
            log.warning(
                "webhook %s: outbox full (%d waiting), %d changes dead-lettered",
                webhook_id,
                bound,
                n,
            )

    async def _subscriptions(self, partner_id: str) -> list[Subscription]:
        now = time.monotonic()
        cached = self._subs.get(partner_id)
        if cached is None or now - cached[0] > SUBSCRIPTIONS_TTL_S:
            cached = (now, await self.store.subscriptions(partner_id))
            self._subs[partner_id] = cached
        return cached[1]

    # -- 2. deliveries --------------------------------------------------------

    async def _scan(self) -> None:
        """Take every subscription no notifier holds, and deliver it."""
        lease_ms = int(self.settings.notifier_lease_s * 1000)
        while True:
            members: Any = await self.redis.smembers(self.keys.partners())
            for raw in members:
                partner = bytes(raw).decode()
                for sub in await self.store.subscriptions(partner):
                    key = (partner, sub.id)
                    task = self._tasks.get(key)
                    if task is not None and not task.done():
                        continue
                    if (
                        task is not None
                        and not task.cancelled()
                        and task.exception() is not None
                    ):
                        raise task.exception()  # type: ignore[misc]
                    took = await self.redis.set(
                        self.keys.lease(partner, sub.id), self.me, nx=True, px=lease_ms
                    )
                    if took:
                        self.stats.held.add(sub.id)
                        self._tasks[key] = asyncio.create_task(
                            self._deliver_all(partner, sub.id),
                            name=f"webhook-{sub.id}",
                        )
            await asyncio.sleep(SCAN_INTERVAL_S)

    def _held_outboxes(self) -> list[str]:
        return [
            self.keys.outbox(partner, webhook_id)
            for (partner, webhook_id), task in self._tasks.items()
            if not task.done()
        ]

    async def _renew(self, partner: str, webhook_id: str) -> bool:
        """Extend our lease; ``False`` if another notifier holds it now."""
        renewed = await self._extend(
            keys=[self.keys.lease(partner, webhook_id)],
            args=[self.me, int(self.settings.notifier_lease_s * 1000)],
        )
        return int(renewed) == 1

    async def _release_all(self) -> None:
        for partner, webhook_id in list(self._tasks):
            key = self.keys.lease(partner, webhook_id)
            with contextlib.suppress(Exception):
                holder: Any = await self.redis.get(key)
                if holder is not None and bytes(holder).decode() == self.me:
                    await self.redis.delete(key)

    async def _deliver_all(self, partner: str, webhook_id: str) -> None:
        """Deliver one subscription's outbox, in order, while we hold it (a
        lost lease stops the deliveries at once; the next scan may take the
        subscription again once the lease is free)."""
        deliveries = asyncio.create_task(self._deliver_outbox(partner, webhook_id))
        lost = False
        try:
            while not deliveries.done():
                await asyncio.wait(
                    {deliveries}, timeout=self.settings.notifier_lease_s / 3
                )
                if not deliveries.done() and not await self._renew(partner, webhook_id):
                    log.warning("webhook %s: lease lost, delivery stopped", webhook_id)
                    lost = True
                    deliveries.cancel()
            if lost:
                with contextlib.suppress(asyncio.CancelledError):
                    await deliveries
                return
            await deliveries  # its failure is the notifier's (crash-only)
        except asyncio.CancelledError:
            deliveries.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deliveries
            raise
        finally:
            self.stats.held.discard(webhook_id)

    async def _deliver_outbox(self, partner: str, webhook_id: str) -> None:
        outbox = self.keys.outbox(partner, webhook_id)
        while True:
            sub = await self.store.get(partner, webhook_id)
            if sub is None:  # deleted: its outbox went with it
                return
            await self._redeliveries(sub)
            head: Any = await self.redis.xread(
                {outbox: "0-0"}, count=1, block=OUTBOX_BLOCK_MS
            )
            if not head:
                continue
            entry_id, fields = head[0][1][0]
            await self._deliver_head(sub, bytes(entry_id).decode(), bytes(fields[b"t"]))

    async def _deliver_head(self, sub: Subscription, entry: str, raw: bytes) -> None:
        """One attempt at the outbox head, unless its retry is not due yet."""
        keys = self.keys
        partner, webhook_id = sub.partner_id, sub.id
        retry_key = keys.retry(partner, webhook_id)
        state: Any = await self.redis.hgetall(retry_key)
        state = {bytes(k).decode(): bytes(v).decode() for k, v in state.items()}
        now = self.clock()
        if state.get("entry") != entry:
            # The 24 h count from when the change entered the outbox (the
            # entry id's milliseconds, Redis's clock): behind an endpoint down
            # for a day, a waiting change gets one attempt, not a day more.
            enqueued = int(entry.partition("-")[0]) / 1000
            state = {"entry": entry, "attempt": "0", "first": repr(enqueued)}
        elif float(state.get("next", "0")) > now:
            # Not due: wait (a little at a time, to keep the lease and see
            # redelivery requests and deletions).
            await asyncio.sleep(min(float(state["next"]) - now, 0.5))
            return
        change = StatusChanged.from_bytes(raw)
        attempt = int(state["attempt"]) + 1
        outcome = await self._send(sub, change)
        at = datetime.fromtimestamp(self.clock(), UTC)
        scale = self.settings.notifier_retry_scale
        if outcome.delivered:
            self.stats.delivered += 1
            self.metrics.outcome["delivered"].inc()
            await self._record(
                sub, change, attempt, at, outcome="delivered", result=outcome
            )
            await self._done_with_head(sub, entry)
            return
        elapsed = (self.clock() - float(state["first"])) / scale
        delay = next_delay(attempt, self.rng, elapsed)
        if delay is None:
            self.stats.dead_lettered += 1
            self.metrics.outcome["dead_lettered"].inc()
            log.warning(
                "webhook %s: %s dead-lettered after %d attempts",
                webhook_id,
                change.transition_id,
                attempt,
            )
            await self._record(
                sub, change, attempt, at, outcome="dead_lettered", result=outcome
            )
            await self._done_with_head(sub, entry)
            return
        self.stats.failed += 1
        self.metrics.outcome["failed"].inc()
        due = self.clock() + delay * scale
        await self._record(
            sub,
            change,
            attempt,
            at,
            outcome="failed",
            result=outcome,
            next_at=datetime.fromtimestamp(due, UTC),
        )
        fields = {**state, "attempt": str(attempt), "next": repr(due)}
        await self._keep_retry(
            keys=[keys.subscriptions(partner), retry_key],
            args=[webhook_id, *(x for kv in fields.items() for x in kv)],
        )

    async def _done_with_head(self, sub: Subscription, entry: str) -> None:
        """The outbox head was delivered or dead-lettered (and recorded):
        delete it and its retry state, so the next change comes up."""
        keys = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.xdel(keys.outbox(sub.partner_id, sub.id), entry)
        pipe.delete(keys.retry(sub.partner_id, sub.id))
        await pipe.execute()

    async def _redeliveries(self, sub: Subscription) -> None:
        """Requests to send a delivery again (``POST …/redeliver``): one
        attempt each, out of the outbox's order, recorded like the others."""
        for entry, request in await self.store.pending_redeliveries(sub.partner_id):
            if request.webhook_id != sub.id:
                continue
            await self._redeliver(sub, request)
            await self.store.redelivery_done(sub.partner_id, entry)

    async def _redeliver(self, sub: Subscription, request: RedeliveryRequest) -> None:
        outcome = await self._send(sub, request.transition)
        self.stats.redelivered += 1
        self.metrics.outcome[
            "redelivered" if outcome.delivered else "redelivery_failed"
        ].inc()
        at = datetime.fromtimestamp(self.clock(), UTC)
        await self._record(
            sub,
            request.transition,
            1,
            at,
            outcome="delivered" if outcome.delivered else "failed",
            result=outcome,
        )

    async def _send(self, sub: Subscription, change: StatusChanged) -> _Outcome:
        assert self._http is not None
        if not self.settings.webhooks_allow_private_urls:
            why = literal_refusal(sub.url)
            if why is not None:  # aiohttp resolves no IP literal: check here
                return _Outcome(False, None, f"refused: {why}", 0.0)
        headers, body = webhook_request(
            change, sub.secret, datetime.fromtimestamp(self.clock(), UTC)
        )
        started = time.perf_counter()
        try:
            async with self._http.post(
                sub.url, data=body, headers=headers, allow_redirects=False
            ) as answer:
                text = (await answer.content.read(MAX_ERROR_CHARS)).decode(
                    errors="replace"
                )
                ok = 200 <= answer.status < 300
                outcome = _Outcome(ok, answer.status, text or None, _ms(started))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            outcome = _Outcome(False, None, reason, _ms(started))
        # Not for a request cancelled midway (a lost lease, a stop): counted
        # requests are the ones with an outcome.
        self.metrics.request_seconds.observe(outcome.duration_ms / 1000)
        return outcome

    async def _record(
        self,
        sub: Subscription,
        change: StatusChanged,
        attempt: int,
        at: datetime,
        *,
        outcome: str,
        result: _Outcome,
        next_at: datetime | None = None,
    ) -> None:
        await self.store.record_delivery(
            sub.partner_id,
            sub.id,
            _attempt(change, attempt, at, outcome, result, next_at=next_at),
        )


def _attempt(
    change: StatusChanged,
    attempt: int,
    at: datetime,
    outcome: str,
    result: _Outcome,
    *,
    next_at: datetime | None = None,
) -> DeliveryAttempt:
    return DeliveryAttempt.model_validate(
        {
            "delivery_id": change.transition_id,
            "attempt": attempt,
            "at": at,
            "outcome": outcome,
            "status_code": result.status_code,
            "response": result.response,
            "duration_ms": result.duration_ms,
            "next_attempt_at": next_at,
            "transition": change,
        }
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
