"""Webhooks: from the causing event to the partner's receiver, at a fixed rate.

    python -m bench.webhooks --rate 1000 --seconds 60 --out docs/benchmarks.md
                                                        (`make bench-webhooks`)

The embedded stack (Apache Kafka, valkey, one worker, the API, one ``mastery
notifier``) and a receiver on loopback (aiohttp, a process of its own, which
verifies every signature with ``standardwebhooks``) subscribed through
``POST /webhooks``. The catalog, then the registrations are produced and
their first statuses delivered; then attempts at ``--rate`` for ``--warmup``
+ ``--seconds``.

Latency of a delivery = the receiver's arrival time (``time.monotonic()``,
the machine's one monotonic clock, read in the receiver's handler) minus the
monotonic time the bench took right before handing the causing attempt to
the producer (found by the CloudEvent's ``data.event_id``). Deliveries caused
by attempts sent during the warm-up are left out. The worker's share is
split off with the status-changes topic: each record's timestamp (CreateTime,
set by the worker's producer, wall clock in ms) minus the attempt's wall
clock send time.

The result replaces the section "Webhooks: event to receiver" of ``--out``
(appended when absent); the rest of the file is left as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from redis import Redis

from app.devstack.embedded import free_port
from app.devstack.embedded_kafka import KAFKA_VERSION
from app.devstack.stack import DevStack, post_json
from app.devstack.workload import (
    DEMO_PARTNER,
    DKT_PARTNER,
    Workload,
    assistments,
    simulated,
)
from bench.pipeline import cpu_seconds, pct, say, write_section
from infra.broker import profile_for
from infra.producer import EventProducer
from infra.settings import Settings
from infra.topic_names import TopicNames
from infra.webhook_store import WebhookKeys
from schemas.events import AttemptGraded
from schemas.webhooks import STATUS_CHANGED_TYPE

__all__ = ["SECTION", "main"]

SECTION = "## Webhooks: event to receiver"
PREFIX = "bench-hooks"
PARTITIONS = 4
DATA = Path("/work/shared/data/assistments2009/builder_train.csv")
PARAMS = Path("/work/shared/reference/bkt/params.json")
#: Simulated classes and learners: 5 x 200, as many attempts each as the run
#: needs (the learners' attempts are interleaved at random).
CLASSES = 5
LEARNERS_PER_CLASS = 200
#: Producer pacing: a tick's attempts are sent together (10 at 1,000/s).
TICK_S = 0.01


# -- the receiver (a process of its own) ------------------------------------------

Arrival = tuple[str, str, float]  # (data.event_id, webhook-id, monotonic time)


def _receiver_process(conn: Connection) -> None:
    import uvloop

    uvloop.run(_receive(conn))


async def _receive(conn: Connection) -> None:
    """Answer 204 to each POST whose signature verifies (400 otherwise),
    noting its arrival; the secret comes once subscribed."""
    from aiohttp import web
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    hooks: list[Webhook] = []
    seen: list[Arrival] = []
    bad: list[str] = []
    verify_s = [0.0]

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.monotonic()
        headers = {k.lower(): v for k, v in request.headers.items()}
        t = time.perf_counter()
        try:
            hooks[0].verify(body, headers)
        except (WebhookVerificationError, IndexError) as exc:
            bad.append(f"{headers.get('webhook-id')}: {exc!r}")
            return web.Response(status=400)
        finally:
            verify_s[0] += time.perf_counter() - t
        event = orjson.loads(body)
        seen.append((event["data"]["event_id"], headers["webhook-id"], arrived))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks/bench", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    conn.send(port)
    loop = asyncio.get_running_loop()
    while True:
        command, arg = await loop.run_in_executor(None, conn.recv)
        if command == "secret":
            hooks.append(Webhook(arg))
            conn.send("ok")
        elif command == "count":
            conn.send((len(seen), len(bad)))
        else:
            break
    await runner.cleanup()
    conn.send((seen, bad, verify_s[0]))


@dataclass
class Receiver:
    """The receiver process and the bench's end of its pipe."""

    proc: Any
    conn: Connection
    port: int

    def set_secret(self, secret: str) -> None:
        self.conn.send(("secret", secret))
        self.conn.recv()

    def count(self) -> tuple[int, int]:
        """(deliveries verified, requests refused)."""
        self.conn.send(("count", None))
        n: tuple[int, int] = self.conn.recv()
        return n

    def stop(self) -> tuple[list[Arrival], list[str], float]:
        """Every arrival, the refusals, the seconds spent verifying."""
        self.conn.send(("stop", None))
        out: tuple[list[Arrival], list[str], float] = self.conn.recv()
        self.proc.join(10)
        return out


def start_receiver() -> Receiver:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver_process, args=(child,), daemon=True)
    proc.start()
    if not parent.poll(30):
        raise RuntimeError("the receiver did not start")
    return Receiver(proc, parent, int(parent.recv()))


# -- the run --------------------------------------------------------------------


def workload_for(args: argparse.Namespace) -> tuple[Workload, str]:
    """The workload (enough attempts for the run) and its partner."""
    needed = math.ceil(args.rate * (args.warmup + args.seconds) * 1.02)
    if args.workload == "assistments":
        w = assistments(DATA, params_path=PARAMS)
        if len(w.attempts) < needed:
            raise SystemExit(f"the replay has {len(w.attempts):,} attempts only")
        w.attempts = w.attempts[:needed]
        return w, DKT_PARTNER
    w = simulated(
        learning_instances=CLASSES,
        learners_per_instance=LEARNERS_PER_CLASS,
        attempts_per_learner=math.ceil(needed / (CLASSES * LEARNERS_PER_CLASS)),
        seed=11,
    )
    return w, DEMO_PARTNER


def subscribe(stack: DevStack, partner: str, port: int) -> tuple[str, str]:
    """(subscription id, secret) of the receiver's subscription."""
    status, body = post_json(
        f"{stack.api_url}/webhooks",
        {
            "url": f"http://127.0.0.1:{port}/hooks/bench",
            "event_types": [STATUS_CHANGED_TYPE],
        },
        token=stack.token(sub="bench", partner_id=partner),
    )
    if status != 201 or not isinstance(body, dict):
        raise RuntimeError(f"POST /webhooks: {status} {body}")
    return str(body["id"]), str(body["secret"])


async def produce(stack: DevStack, events: list[Any]) -> None:
    profile = profile_for(Settings(broker_profile="kafka"))
    async with EventProducer(
        stack.kafka.bootstrap_servers, profile, TopicNames(PREFIX)
    ) as producer:
        await producer.send_all(events)


async def produce_paced(
    stack: DevStack, attempts: list[AttemptGraded], rate: float
) -> tuple[dict[str, tuple[float, float]], float, float]:
    """Send at ``rate``: event_id -> (monotonic, wall) time taken right before
    its ``send``, the monotonic start, the seconds it took."""
    profile = profile_for(Settings(broker_profile="kafka"))
    per_tick = max(1, round(rate * TICK_S))
    sent_at: dict[str, tuple[float, float]] = {}
    # The pre-built workload's full collections would pause the sender while
    # clocks run (bench/pipeline.py, freshness): frozen out of their reach.
    gc.collect()
    gc.freeze()
    try:
        async with EventProducer(
            stack.kafka.bootstrap_servers, profile, TopicNames(PREFIX)
        ) as producer:
            futures: list[asyncio.Future[object]] = []
            started = time.monotonic()
            n = 0
            while n < len(attempts):
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                for event in attempts[n : n + per_tick]:
                    sent_at[event.event_id] = (time.monotonic(), time.time())
                    futures.append(await producer.send(event))
                n += per_tick
                if len(futures) >= 2000:
                    await asyncio.gather(*futures)
                    futures.clear()
            took = time.monotonic() - started
            await asyncio.gather(*futures)
    finally:
        gc.unfreeze()
    return sent_at, started, took


async def topic_records(stack: DevStack) -> dict[str, tuple[float, str]]:
    """transition id -> (its status-changes record's timestamp in epoch
    seconds, its event_id), for every record of the topic."""
    consumer = AIOKafkaConsumer(
        TopicNames(PREFIX).status_changes,
        bootstrap_servers=stack.kafka.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 120
        # Without a group, the consumer assigns itself every partition once
        # it has the topic's metadata.
        while not (parts := list(consumer.assignment())):
            if time.monotonic() > deadline:
                raise RuntimeError("no partition of the status-changes topic")
            await asyncio.sleep(0.1)
        end = await consumer.end_offsets(parts)
        out: dict[str, tuple[float, str]] = {}
        remaining = {tp for tp in parts if end[tp] > 0}
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    change = orjson.loads(record.value)
                    out[change["transition_id"]] = (
                        record.timestamp / 1000,
                        change["event_id"],
                    )
                    if record.offset + 1 >= end[tp]:
                        remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


def catalog_known(stack: DevStack, w: Workload, partner: str) -> None:
    """Wait until the API serves every class (the worker has folded the
    catalog), so learners are folded against it (docs/webhooks.md)."""
    token = stack.token(sub="bench", partner_id=partner)
    deadline = time.monotonic() + 120
    for li in w.learning_instances:
        url = f"{stack.api_url}/learning-instances/{li}/metrics/status-and-progress"
        while post_json(url, {"goal_ids": w.goals_of(li)}, token=token)[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the catalog of {li} not served within 120 s")
            time.sleep(0.2)


def drain(stack: DevStack, receiver: Receiver, outbox: str, quiet_s: float) -> int:
    """Wait until the outbox is empty and nothing arrived for ``quiet_s``;
    the deliveries so far."""
    rd = Redis.from_url(stack.redis.url)
    deadline = time.monotonic() + 300
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        n, _ = receiver.count()
        if n != last:
            last, last_change = n, time.monotonic()
        elif rd.xlen(outbox) == 0 and time.monotonic() - last_change > quiet_s:
            return n
        time.sleep(0.2)
    raise RuntimeError(f"deliveries did not drain within 300 s ({last} so far)")


def cpu_now(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each process, of this one and of the whole machine."""
    out = {k: cpu_seconds(pid) for k, pid in pids.items()}
    busy = [int(x) for x in Path("/proc/stat").read_text().split()[1:9]]
    machine = (sum(busy) - busy[3] - busy[4]) / os.sysconf("SC_CLK_TCK")
    return out | {"bench": cpu_seconds(os.getpid()), "whole machine": machine}


def run(args: argparse.Namespace) -> dict[str, Any]:
    r: dict[str, Any] = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "load0": os.getloadavg(),
    }
    say(f"building the {args.workload} workload ...")
    w, partner = workload_for(args)
    r.update(learners=len(w.registrations), classes=len(w.learning_instances))
    logs = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    settings = Settings(api_port=0, topic_prefix=PREFIX, topic_partitions=PARTITIONS)
    stack = DevStack(settings, log_dir=logs)
    receiver: Receiver | None = None
    try:
        stack.start_servers()
        worker = stack.start_worker(
            extra_env={"MASTERY_METRICS_PORT": str(free_port())}
        )
        stack.start_api()
        receiver = start_receiver()
        hook_id, secret = subscribe(stack, partner, receiver.port)
        receiver.set_secret(secret)
        outbox = WebhookKeys().outbox(partner, hook_id)
        notifier = stack.start_notifier()
        say(f"stack up: {stack.kafka.bootstrap_servers}, logs {logs}")
        say(f"catalog ({len(w.catalog)}), then {len(w.registrations):,} registrations")
        asyncio.run(produce(stack, list(w.catalog)))
        catalog_known(stack, w, partner)
        asyncio.run(produce(stack, list(w.registrations)))
        r["reg_deliveries"] = drain(stack, receiver, outbox, quiet_s=3.0)
        say(f"first statuses of the registrations delivered: {r['reg_deliveries']:,}")
        kafka = stack.kafka.nodes[0].proc
        assert stack.api and stack.redis.proc and kafka
        pids = {
            "worker": worker.pid,
            "notifier": notifier.pid,
            "api": stack.api.pid,
            "receiver": receiver.proc.pid,
            "kafka (JVM)": kafka.pid,
            "valkey": stack.redis.proc.pid,
        }
        cpu0, wall0 = cpu_now(pids), time.monotonic()
        say(
            f"producing {len(w.attempts):,} attempts at {args.rate:,.0f}/s "
            f"({args.warmup:.0f} s of warm-up, then {args.seconds:.0f} s)"
        )
        sent_at, t0, took = asyncio.run(produce_paced(stack, w.attempts, args.rate))
        r.update(attempts=len(sent_at), produce_s=took, rate=len(sent_at) / took)
        say(f"sent {len(sent_at):,} in {took:.1f} s ({r['rate']:,.0f}/s); draining")
        drain(stack, receiver, outbox, quiet_s=3.0)
        cpu1, wall1 = cpu_now(pids), time.monotonic()
        r["cpu"] = (
            ", ".join(f"{k} {(cpu1[k] - cpu0[k]) / (wall1 - wall0):.0%}" for k in cpu1)
            + f" of one core over {wall1 - wall0:.0f} s"
        )
        seen, bad, verify_s = receiver.stop()
        receiver = None
        records = asyncio.run(topic_records(stack))
    finally:
        if receiver is not None:
            receiver.stop()
        stack.stop()
    r["load1"] = os.getloadavg()
    r.update(measure(args, seen, bad, verify_s, records, sent_at, t0))
    return r


def measure(
    args: argparse.Namespace,
    seen: list[Arrival],
    bad: list[str],
    verify_s: float,
    records: dict[str, tuple[float, str]],
    sent_at: dict[str, tuple[float, float]],
    t0: float,
) -> dict[str, Any]:
    """The figures: latencies of the deliveries caused by attempts sent after
    the warm-up, the worker's share, and the checks."""
    first: dict[str, Arrival] = {}
    for arrival in seen:
        first.setdefault(arrival[1], arrival)
    start = t0 + args.warmup
    total: list[tuple[float, float]] = []  # (send time, latency ms)
    worker: list[float] = []
    rest: list[float] = []  # the notifier, the HTTP request and the receiver
    warmup = 0
    for event_id, transition, arrived in first.values():
        sent = sent_at.get(event_id)
        if sent is None:
            continue  # a registration's first status
        if sent[0] < start:
            warmup += 1
            continue
        total.append((sent[0], (arrived - sent[0]) * 1000))
        if transition in records:
            worker.append((records[transition][0] - sent[1]) * 1000)
            rest.append(total[-1][1] - worker[-1])
    if not total:
        raise RuntimeError("no delivery caused by a measured attempt")
    total.sort()
    lat = [ms for _, ms in total]
    third = max(1, len(lat) // 3)
    on_topic = {t for t, (_, e) in records.items() if e in sent_at}
    per_second: dict[int, int] = {}
    for _, _, arrived in first.values():
        per_second[int(arrived)] = per_second.get(int(arrived), 0) + 1
    return {
        "n": len(lat),
        "warmup_n": warmup,
        "per_s": len(lat) / args.seconds,
        "p50": pct(lat, 0.5),
        "p90": pct(lat, 0.9),
        "p99": pct(lat, 0.99),
        "max": max(lat),
        "thirds": " / ".join(
            f"{pct(lat[i : i + third], 0.5):.0f}" for i in range(0, 3 * third, third)
        ),
        "w_p50": pct(worker, 0.5) if worker else math.nan,
        "w_p99": pct(worker, 0.99) if worker else math.nan,
        "r_p50": pct(rest, 0.5) if rest else math.nan,
        "r_p99": pct(rest, 0.99) if rest else math.nan,
        "peak_per_s": max(per_second.values()),
        "on_topic": len(on_topic),
        "missing": len(on_topic - set(first)),
        "duplicates": len(seen) - len(first),
        "bad": len(bad),
        "bad_first": bad[:3],
        "verified": len(seen),
        "verify_us": verify_s / max(1, len(seen) + len(bad)) * 1e6,
    }


def render(r: dict[str, Any], args: argparse.Namespace, runtime_s: float) -> str:
    rev = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    load0 = " / ".join(f"{x:.2f}" for x in r["load0"])
    load1 = " / ".join(f"{x:.2f}" for x in r["load1"])
    workload = (
        f"simulated learners (`app.devstack.workload.simulated`, {r['classes']} "
        f"classes, {r['learners']:,} registrations)"
        if args.workload == "simulated"
        else f"the ASSISTments replay (`{DATA}`, its first {r['attempts']:,} attempts)"
    )
    return f"""{SECTION}

`make bench-webhooks` (`python -m bench.webhooks {" ".join(sys.argv[1:])}`),
{r["date"]}, git `{rev or "unknown"}`, took {runtime_s / 60:.1f} min; `make
bench` runs it last (after the read path). One run on
this machine ({os.cpu_count()} cores, {platform.machine()}, Python
{platform.python_version()}), **shared with other people's test runs**: load
average (1 / 5 / 15 min) {load0} at the start, {load1} at the end. Everything
runs on it: Apache Kafka {KAFKA_VERSION} (one node), valkey, one worker, the
API, one `mastery notifier` (default settings), the receiver, the producer.

Issue 21, point 1: the time from an attempt to the partner's endpoint
receiving the status change it caused. Workload: {workload}; the catalog,
then the registrations were produced and their {r["reg_deliveries"]:,} first
statuses delivered before the timed part. Then {r["attempts"]:,} attempts
at {r["rate"]:,.0f}/s (paced in {TICK_S * 1000:.0f} ms ticks): the first
{args.warmup:.0f} s are warm-up, left out ({r["warmup_n"]:,} deliveries), the
next {args.seconds:.0f} s are measured. Latency = the receiver's arrival time
(monotonic clock, in its request handler, before verifying) minus the
monotonic time taken right before the causing attempt was handed to the
producer (found by the CloudEvent's `data.event_id`; the producer's 5 ms
linger is inside). The worker's share: the status-changes record's
timestamp (CreateTime, set by the worker's producer; wall clock, ms) minus
the attempt's wall-clock send time.

| measure | value |
| --- | --- |
| status changes delivered (measured part) | {r["n"]:,} ({r["per_s"]:,.0f}/s) |
| **latency p50 / p90 / p99** | \
**{r["p50"]:.0f} / {r["p90"]:.0f} / {r["p99"]:.0f} ms** |
| latency max | {r["max"]:,.0f} ms |
| p50 of the first / middle / last third | {r["thirds"]} ms |
| of which the worker (attempt to status-changes topic) p50 / p99 | \
{r["w_p50"]:.0f} / {r["w_p99"]:.0f} ms |
| of which the rest (topic to receiver: notifier, request) p50 / p99 | \
{r["r_p50"]:.0f} / {r["r_p99"]:.0f} ms |
| most deliveries in one second (the notifier with a backlog) | \
{r["peak_per_s"]:,} |
| caused by the attempts, on the topic / never delivered / duplicates | \
{r["on_topic"]:,} / {r["missing"]} / {r["duplicates"]} |
| signatures verified (all requests) / refused | {r["verified"]:,} / {r["bad"]} \
({r["verify_us"]:.0f} us per `Webhook.verify`) |
| CPU (attempts until drained) | {r["cpu"]} |

The receiver (aiohttp on uvloop, a process of its own) verifies every
request with `standardwebhooks` and answers `204`; the notifier delivers a
subscription's outbox one request at a time, in order
(docs/webhooks.md, "Delivery"), so each status change waits for the ones
before it.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="attempts/s")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured")
    parser.add_argument("--warmup", type=float, default=10.0, help="left out (s)")
    parser.add_argument(
        "--workload", choices=("simulated", "assistments"), default="simulated"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.monotonic()
    result = run(args)
    say(repr({k: v for k, v in result.items() if k != "cpu"}))
    section = render(result, args, time.monotonic() - started)
    print(section)
    if args.out is not None:
        write_section(args.out, SECTION, section)
        say(f"wrote {args.out}")


if __name__ == "__main__":
    main()
