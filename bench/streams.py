"""Live streams under load: many open SSE streams on one API process while the
worker applies a steady rate of attempts.

    python -m bench.streams --out docs/benchmarks.md   (`make bench-stream`)

The whole stack runs on this machine (embedded broker and Redis, one worker,
one API process). Simulated learners are registered, then ``--streams`` clients
(one process, asyncio, raw sockets) open the learning-instance stream of their
class and the producer sends ``--rate`` attempts per second for ``--seconds``.

Delivery latency of a change = the time the client read its event minus the
time in its id: a change-stream id is the Redis server's clock (ms) at the
``XADD``, which runs in the same MULTI/EXEC as the row's ``SET``; the client
and Redis share this machine's clock. The API's CPU is its process's user +
system time over the measured interval.

The result replaces the section "Live streams" of ``--out`` (appended when
absent); the rest of the file is left as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import platform
import re
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from app.devstack.stack import DevStack, post_json
from app.devstack.workload import Workload, simulated
from bench.pipeline import cpu_seconds, pct, rss_mb, say, write_section
from infra.broker import profile_for
from infra.producer import EventProducer
from infra.settings import Settings
from infra.topic_names import TopicNames

SECTION = "## Live streams (dashboard)"
PARTNER = "partner-demo"  # app.devstack.workload.simulated
_ROW_ID = re.compile(rb"id: (\d+)-\d+\nevent: row\n")


# -- the clients (a process of their own) ---------------------------------------


async def _one_stream(
    host: str,
    port: int,
    path: str,
    token: str,
    opened: asyncio.Event,
    stop: asyncio.Event,
    out: dict[str, Any],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        out["errors"].append(head.split(b"\r\n", 1)[0].decode())
        return
    out["open"] += 1
    if out["open"] == out["wanted"]:
        opened.set()
    tail = b""
    latencies: list[float] = out["latencies"]
    while not stop.is_set():
        try:
            chunk = await asyncio.wait_for(reader.read(262_144), 0.5)
        except TimeoutError:
            continue
        if not chunk:
            out["closed"] += 1
            return
        now_ms = time.time() * 1000
        data = tail + chunk
        if out["measuring"]:
            latencies.extend(now_ms - int(m) for m in _ROW_ID.findall(data))
        out["bytes"] += len(chunk)
        tail = data[-64:]
    writer.close()


async def _clients(url: str, paths: list[str], token: str, conn: Connection) -> None:
    host, port = url.removeprefix("http://").split(":")
    out: dict[str, Any] = {
        "open": 0,
        "wanted": len(paths),
        "closed": 0,
        "bytes": 0,
        "errors": [],
        "latencies": [],
        "measuring": False,
    }
    opened, stop = asyncio.Event(), asyncio.Event()
    tasks = []
    for path in paths:
        tasks.append(
            asyncio.create_task(
                _one_stream(host, int(port), path, token, opened, stop, out)
            )
        )
        await asyncio.sleep(0.005)  # do not stampede the accept queue
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(opened.wait(), 120)
    conn.send(("opened", out["open"], out["errors"][:3]))
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command == "measure":
            out["latencies"].clear()
            out["measuring"] = True
        elif command == "stop":
            break
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    conn.send(
        (
            "done",
            out["latencies"],
            out["open"],
            out["closed"],
            out["bytes"],
            out["errors"][:3],
        )
    )


def _client_process(url: str, paths: list[str], token: str, conn: Connection) -> None:
    import uvloop

    uvloop.run(_clients(url, paths, token, conn))


# -- the run ---------------------------------------------------------------------


def _wait_for_rows(stack: DevStack, workload: Workload, token: str) -> None:
    deadline = time.monotonic() + 180
    for li in workload.learning_instances:
        url = f"{stack.api_url}/learning-instances/{li}/metrics/status-and-progress"
        want = sum(
            1
            for r in workload.registrations
            if r.learning_instance_id == li and r.role == "learner"
        )
        while True:
            status, page = post_json(
                url,
                {"goal_ids": workload.goals_of(li), "registrations_per_page": 100},
                token=token,
            )
            if status == 200 and isinstance(page, dict) and len(page["data"]) >= want:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no rows for {li}: {status} {page}")
            time.sleep(0.5)


async def _produce_paced(
    stack: DevStack, events: list[Any], rate: float
) -> tuple[int, float]:
    profile = profile_for(Settings(broker_profile="kafka"))
    topics = TopicNames(stack.settings.topic_prefix)
    tick = 0.05
    per_tick = max(1, round(rate * tick))
    started = time.monotonic()
    sent = 0
    async with EventProducer(
        stack.kafka.bootstrap_servers, profile, topics
    ) as producer:
        while sent < len(events):
            due = started + (sent / rate)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = events[sent : sent + per_tick]
            await producer.send_all(chunk)
            sent += len(chunk)
    return sent, time.monotonic() - started


def run(args: argparse.Namespace) -> dict[str, Any]:
    per_class = args.streams // args.classes
    workload = simulated(
        learning_instances=args.classes,
        learners_per_instance=per_class,
        attempts_per_learner=max(1, round(args.rate * args.seconds / args.streams)),
        seed=11,
    )
    # Every client may open its stream with one token; the API reads its
    # limits from the environment the stack passes on.
    os.environ["MASTERY_STREAM_MAX_PER_TOKEN"] = str(args.streams)
    os.environ["MASTERY_STREAM_MAX_TOTAL"] = str(args.streams + 10)
    settings = Settings(api_port=0, topic_partitions=4, topic_prefix="bench-sse")
    result: dict[str, Any] = {
        "args": vars(args),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": os.getloadavg(),
    }
    with DevStack(settings) as stack:
        say("starting the stack")
        stack.start()
        token = stack.token(partner_id=PARTNER)
        say(f"registering {len(workload.registrations)} learners")
        asyncio.run(
            _produce_paced(stack, [*workload.catalog, *workload.registrations], 5000)
        )
        _wait_for_rows(stack, workload, token)
        paths = [
            f"/learning-instances/{li}/metrics/status-and-progress/stream"
            f"?goal_ids={','.join(workload.goals_of(li))}"
            for li in workload.learning_instances
            for _ in range(per_class)
        ]
        parent, child = mp.Pipe()
        clients = mp.get_context("spawn").Process(
            target=_client_process, args=(stack.api_url, paths, token, child)
        )
        clients.start()
        _, opened, errors = parent.recv()
        say(f"{opened} streams open (errors: {errors})")
        assert stack.api is not None
        api_pid = stack.api.pid
        result["rss_before_mib"] = rss_mb(api_pid)
        parent.send("measure")
        cpu0, wall0 = cpu_seconds(api_pid), time.monotonic()
        say(f"producing {len(workload.attempts):,} attempts at {args.rate:.0f}/s")
        sent, took = asyncio.run(
            _produce_paced(stack, list(workload.attempts), args.rate)
        )
        time.sleep(2.0)  # the last batches reach the clients
        cpu1, wall1 = cpu_seconds(api_pid), time.monotonic()
        result["rss_after_mib"] = rss_mb(api_pid)
        parent.send("stop")
        _, latencies, still_open, closed, received, errors = parent.recv()
        clients.join(30)
        result |= {
            "opened": opened,
            "open_at_end": still_open - closed,
            "closed_by_server": closed,
            "attempts": sent,
            "produce_s": took,
            "rate": sent / took,
            "events": len(latencies),
            "bytes": received,
            "api_cpu": (cpu1 - cpu0) / (wall1 - wall0),
            "window_s": wall1 - wall0,
            "p50": pct(latencies, 0.5) if latencies else float("nan"),
            "p99": pct(latencies, 0.99) if latencies else float("nan"),
            "max": max(latencies) if latencies else float("nan"),
            "errors": errors,
        }
    return result


def render(r: dict[str, Any]) -> str:
    a = r["args"]
    delivered = (
        f"{r['events']:,} ({r['events'] / r['window_s']:,.0f}/s, "
        f"{r['bytes'] / 1e6:,.0f} MB)"
    )
    latency = f"{r['p50']:.0f} / {r['p99']:.0f} / {r['max']:.0f} ms"
    rss = f"{r['rss_before_mib']:.0f} / {r['rss_after_mib']:.0f} MiB"
    ends = f"{r['open_at_end']} / {r['closed_by_server']}"
    return f"""{SECTION}

`make bench-stream` (`python -m bench.streams`): {r["opened"]} open SSE streams
(the class view of {a["classes"]} classes of {a["streams"] // a["classes"]}
learners, {a["streams"] // a["classes"]} viewers each) on **one API process**,
while the worker applies {r["rate"]:,.0f} attempts/s ({r["attempts"]:,} attempts in
{r["produce_s"]:.1f} s); everything (broker, valkey, worker, API, the clients)
on this machine ({os.cpu_count()} cores, {platform.machine()}, shared with
other work). Latency = client read time - the change's stream id (Redis's
clock at the XADD, in the row's MULTI/EXEC), same clock, 1 ms resolution.
One run on {r["date"]}, load average {r["load"][0]:.2f} at the start.

| measure | value |
| --- | --- |
| row events delivered (all streams) | {delivered} |
| delivery latency p50 / p99 / max | {latency} |
| API CPU (one process) | {r["api_cpu"] * 100:.0f} % of one core |
| API RSS before / after | {rss} |
| streams open at the end / closed by the server | {ends} |

One XREAD reader per class feeds all of its streams (`api/change_hub.py`), and
a batch's changes go out as one write per stream, so the cost grows with
streams x changed rows, not with polling.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = run(args)
    say(repr({k: v for k, v in result.items() if k != "args"}))
    section = render(result)
    print(section)
    if args.out is not None:
        write_section(args.out, SECTION, section)


if __name__ == "__main__":
    main()
