"""Broker faults on a 3-node Apache Kafka cluster, shared by the fault tests
(tests/reliability/test_cluster_faults.py) and ``bench.crash_soak --cluster``.

The load is what a platform sends: attempts ``POST``ed to the running API's
``/batch-events`` with client attempt ids, retried on ``503`` as
docs/ingest.md says. Each feeder thread owns a fixed set of learners and
sends their attempts in order, so a learner's attempts reach its partition in
the order the oracle folds them. Probe learners, fed by nobody else, measure
freshness: one attempt at a time, from its request until its row shows it.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition

from app.devstack.embedded_kafka import KafkaCluster
from app.devstack.stack import RESTART_EXIT_CODE, DevStack
from app.devstack.workload import Workload
from infra.settings import Settings
from infra.topic_names import TopicNames
from schemas.events import AttemptGraded, RegistrationCreated
from tests.integration.helpers import partner_of, produce, wait_until_rows_match
from tests.oracle import expected_rows
from tests.waiting import wait_for

__all__ = [
    "BROKER_CONFIG",
    "Feeders",
    "Prober",
    "busiest_partition_leader",
    "cluster_stack",
    "exit_summary",
    "seed_learners",
    "wait_in_sync",
    "worker_report",
]

#: Broker settings of the fault tests. Kafka's defaults, except that a broker
#: that stops heart-beating is fenced after 6 s instead of 9 s (its
#: partitions move and it leaves every ISR only then), so that a fault is
#: over within the freshness bound of 10 s on a loaded 2-core machine.
BROKER_CONFIG = {
    "broker.session.timeout.ms": "6000",
    "broker.heartbeat.interval.ms": "1500",
}


@contextmanager
def cluster_stack(
    log_dir: Path,
    prefix: str,
    *,
    partitions: int = 4,
    broker_config: dict[str, str] | None = None,
    session_timeout_s: float | None = None,
) -> Iterator[DevStack]:
    """Three brokers (RF 3, ``min.insync.replicas=2``), Redis and the API;
    ``session_timeout_s`` is the workers' consumer-group session (default:
    the Kafka profile's 30 s)."""
    settings = Settings(
        api_port=0,
        topic_partitions=partitions,
        topic_replication=3,
        topic_prefix=prefix,
        broker_session_timeout_s=session_timeout_s,
    )
    kafka = KafkaCluster(3, config={**BROKER_CONFIG, **(broker_config or {})})
    with DevStack(settings, log_dir=log_dir, kafka=kafka) as stack:
        stack.start_servers()
        stack.start_api()
        try:
            yield stack
        finally:
            for node in kafka.nodes:  # kept next to the workers' logs
                if node.log_path.exists():
                    (log_dir / f"kafka-{node.node_id}.log").write_bytes(
                        node.log_path.read_bytes()[-2_000_000:]
                    )


class _Client:
    """One keep-alive HTTP connection to the API."""

    def __init__(self, stack: DevStack, token: str) -> None:
        self._port = stack.api_port
        self._headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
        }
        self._conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: object, timeout: float = 30.0) -> tuple[int, Any]:
        """(status, decoded body); status 0 when the connection failed."""
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    "127.0.0.1", self._port, timeout=timeout
                )
            self._conn.request("POST", path, orjson.dumps(body), self._headers)
            response = self._conn.getresponse()
            raw = response.read()
            return response.status, orjson.loads(raw) if raw else None
        except (OSError, http.client.HTTPException) as exc:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return 0, repr(exc)


def _item(attempt: AttemptGraded) -> dict[str, Any]:
    return {
        "attempt_id": attempt.attempt_id,
        "registration_id": attempt.registration_id,
        "module_id": attempt.module_id,
        "is_correct": attempt.is_correct,
        "interaction_end_time": attempt.interaction_end_time.isoformat(),
        **({"goal_id": attempt.goal_id} if attempt.goal_id else {}),
    }


@dataclass
class _Lane:
    """One feeder thread's learners' attempts, in workload order."""

    attempts: list[AttemptGraded]
    sent: int = 0  # a prefix of ``attempts`` was accepted
    requests: int = 0
    unavailable: int = 0  # 503s and failed connections, each retried
    rejected: list[str] = field(default_factory=list)
    finished: float | None = None  # when every attempt was sent


class Feeders:
    """Attempts of the workload through ``POST /batch-events`` at ``rate``/s.

    ``lanes`` threads each own the learners ``i % lanes``; a lane behind its
    schedule (after a 503 or a slow answer) catches up with bigger requests
    (at most 500 events, the API's limit). A request answered 503, or not at
    all, is sent again as it was: the attempt ids make that idempotent.
    """

    def __init__(
        self,
        stack: DevStack,
        workload: Workload,
        attempts: Sequence[AttemptGraded],
        *,
        rate: float = 2000.0,
        lanes: int = 4,
    ) -> None:
        self.stack = stack
        self.rate = rate
        self.token = stack.token(
            partner_id=partner_of(workload, workload.learning_instances[0]),
            roles=("ingest",),
        )
        learners = sorted({a.registration_id for a in attempts})
        lane_of = {reg: i % lanes for i, reg in enumerate(learners)}
        self.lanes = [_Lane([]) for _ in range(lanes)]
        for attempt in attempts:
            self.lanes[lane_of[attempt.registration_id]].attempts.append(attempt)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = 0.0
        self.stopped = 0.0

    def start(self) -> Feeders:
        self.started = time.monotonic()
        for lane in self.lanes:
            thread = threading.Thread(target=self._run, args=(lane,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, lane: _Lane) -> None:
        client = _Client(self.stack, self.token)
        per_lane = self.rate / len(self.lanes)
        while not self._stop.is_set() and lane.sent < len(lane.attempts):
            due = int(per_lane * (time.monotonic() - self.started)) - lane.sent
            if due < 1:
                time.sleep(0.01)
                continue
            batch = lane.attempts[lane.sent : lane.sent + min(due, 500)]
            body = {"events": [_item(a) for a in batch]}
            while True:  # the same request until it is answered 207
                lane.requests += 1
                status, answer = client.post("/batch-events", body)
                if status == 207:
                    break
                lane.unavailable += 1
                # Retry-After says 5 s; a platform retrying sooner is fine
                # (idempotent) and keeps the backlog short.
                time.sleep(0.5)
            lane.rejected += [
                f"{r.get('code')}: {r.get('reason')}"
                for r in answer["results"]
                if r["status"] != "accepted"
            ]
            lane.sent += len(batch)
        if lane.sent == len(lane.attempts):
            lane.finished = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
            assert not thread.is_alive(), "a feeder is stuck on a request"
        self.stopped = time.monotonic()

    def accepted(self) -> list[AttemptGraded]:
        """Every attempt the API acknowledged (per learner, a prefix)."""
        return [a for lane in self.lanes for a in lane.attempts[: lane.sent]]

    @property
    def sent(self) -> int:
        return sum(lane.sent for lane in self.lanes)

    def describe(self) -> str:
        ends = [lane.finished for lane in self.lanes if lane.finished is not None]
        end = min([self.stopped or time.monotonic(), *ends])
        seconds = max(1e-9, end - self.started)
        requests = sum(lane.requests for lane in self.lanes)
        unavailable = sum(lane.unavailable for lane in self.lanes)
        return (
            f"{self.sent:,} attempts in {seconds:.0f} s ({self.sent / seconds:,.0f}/s"
            f"{'' if not ends else ', then a lane had sent all it had'}) "
            f"by {requests:,} requests, {unavailable} answered 503 or not at all "
            "and retried"
        )


@dataclass(frozen=True)
class Probe:
    """One attempt of a probe learner: sent at ``sent`` (monotonic), its row
    showed it ``latency_s`` later (None: not within the probe's patience)."""

    sent: float
    latency_s: float | None
    registration_id: str


class Prober:
    """Every ``interval_s``, one attempt of a probe learner through ``POST
    /registrations/{id}/graded-events``, then its row polled until it equals
    the oracle's; records how long that took."""

    def __init__(
        self,
        stack: DevStack,
        workload: Workload,
        attempts: Sequence[AttemptGraded],
        *,
        interval_s: float = 1.0,
        patience_s: float = 60.0,
    ) -> None:
        self.stack = stack
        self.workload = workload
        self.interval_s = interval_s
        self.patience_s = patience_s
        self.registrations = {r.registration_id: r for r in workload.registrations}
        by_learner: dict[str, list[AttemptGraded]] = {}
        for attempt in attempts:
            by_learner.setdefault(attempt.registration_id, []).append(attempt)
        self._queues = {reg: iter(items) for reg, items in by_learner.items()}
        self._order = itertools.cycle(sorted(by_learner))
        self.sent: dict[str, list[AttemptGraded]] = {reg: [] for reg in by_learner}
        self.probes: list[Probe] = []
        self.token = stack.token(
            partner_id=partner_of(workload, workload.learning_instances[0])
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.patience_s + 60)
        assert not self._thread.is_alive(), "the prober is stuck"

    def accepted(self) -> list[AttemptGraded]:
        return [a for items in self.sent.values() for a in items]

    def _expected(self, reg_id: str) -> tuple[list[str], list[dict[str, Any]]]:
        li = self.registrations[reg_id].learning_instance_id
        goals = self.workload.goals_of(li)
        rows = expected_rows(
            self.workload.catalog, [self.registrations[reg_id], *self.sent[reg_id]]
        )
        return goals, [rows[reg_id][g] for g in goals]

    def _run(self) -> None:
        client = _Client(self.stack, self.token)
        while not self._stop.is_set():
            began = time.monotonic()
            reg_id = next(self._order)
            attempt = next(self._queues[reg_id], None)
            if attempt is None:
                return
            item = _item(attempt)
            del item["registration_id"]
            while True:
                status, _ = client.post(f"/registrations/{reg_id}/graded-events", item)
                if status == 202:
                    break
                if time.monotonic() - began > self.patience_s:
                    self.probes.append(Probe(began, None, reg_id))
                    self.sent[reg_id].append(attempt)  # may have been stored
                    return
                time.sleep(0.2)
            self.sent[reg_id].append(attempt)
            goals, expected = self._expected(reg_id)
            latency = None
            while time.monotonic() - began < self.patience_s:
                status, page = client.post(
                    f"/registrations/{reg_id}/metrics/status-and-progress",
                    {"goal_ids": goals},
                )
                if status == 200 and page["data"][0]["status_and_progress"] == expected:
                    latency = time.monotonic() - began
                    break
                time.sleep(0.05)
            self.probes.append(Probe(began, latency, reg_id))
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))

    def worst_after(self, t: float) -> float | None:
        """The slowest probe sent at or after ``t`` (None: one never showed)."""
        after = [p.latency_s for p in self.probes if p.sent >= t]
        assert after, "no probe was sent after the fault"
        return None if None in after else max(a for a in after if a is not None)

    def describe(self, t0: float) -> str:
        return ", ".join(
            f"{p.sent - t0:+.1f}s:"
            + ("never" if p.latency_s is None else f"{p.latency_s:.2f}")
            for p in self.probes
        )


async def _busiest(bootstrap: str, topic: str) -> tuple[int, int, dict[int, int]]:
    """(partition with most records, its leader, end offsets) of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        assert parts, f"no metadata for {topic}"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    busiest = max(tps, key=lambda tp: ends[tp])
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        await client.force_metadata_update()
        leader = client.cluster.leader_for_partition(busiest)
    finally:
        await client.close()
    assert leader is not None and leader >= 0, f"{busiest} has no leader"
    return busiest.partition, leader, {tp.partition: ends[tp] for tp in tps}


def busiest_partition_leader(stack: DevStack) -> tuple[int, int, dict[int, int]]:
    """The registration-events partition with the most records and the node
    that leads it, from the brokers' metadata."""
    topic = TopicNames(stack.settings.topic_prefix).registration_events
    return asyncio.run(_busiest(stack.kafka.bootstrap_servers, topic))


def worker_report(stack: DevStack, started: int = 2) -> tuple[list[int | None], int]:
    """(exit codes of every worker process, restarts): the supervisor adds a
    process to ``stack.workers`` for each restart of the ``started`` ones."""
    return [proc.poll() for proc in stack.workers], len(stack.workers) - started


def seed_learners(stack: DevStack, workload: Workload) -> None:
    """Catalog and registrations straight to Kafka (set-up, not the load),
    then until the API knows every learner (it checks registrations)."""
    produce(stack, [*workload.catalog, *workload.registrations])
    events: list[RegistrationCreated | AttemptGraded] = [*workload.registrations]
    wait_until_rows_match(stack, workload, events, per_page=100, timeout_s=120)


def exit_reasons(stack: DevStack) -> list[str]:
    """The workers' own lines on why they ended
    (app/worker/faust_corrections/exit_policy.py)."""
    return [
        line.strip()
        for log in sorted(stack.log_dir.glob("worker-*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if "worker exits (code" in line
    ]


def exit_summary(codes: list[int | None]) -> str:
    return ", ".join(
        "running"
        if c is None
        else ("75 (restart)" if c == RESTART_EXIT_CODE else str(c))
        for c in codes
    )


async def _under_replicated(bootstrap: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if not t.startswith("__")]
        names.append("__consumer_offsets")
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return [
        f"{topic['topic']}[{p['partition']}] isr {p['isr']}"
        for topic in described
        for p in topic["partitions"]
        if len(p["isr"]) < len(p["replicas"])
    ]


def wait_in_sync(stack: DevStack, timeout_s: float = 120.0) -> float:
    """Until no partition is under-replicated (what an operator waits for
    between two restarts of a rolling restart); returns the seconds waited."""
    began = time.monotonic()
    wait_for(
        lambda: asyncio.run(_under_replicated(stack.kafka.bootstrap_servers)),
        accept=lambda lagging: not lagging,
        retry_on=(Exception,),  # a broker still starting: ask again
        timeout_s=timeout_s,
        interval_s=0.5,
        what="every partition in sync (none under-replicated)",
    )
    return time.monotonic() - began
