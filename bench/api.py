"""The read path alone: what one and two API processes serve (``make bench-api``).

No broker and no worker: a real valkey/redis-server (the embedded one) holds
the read model of one ASSISTments class of 100 learners, folded by the pure
model (``processors``) and written by the worker's own projector, so rows,
templates and change streams are what the worker writes. ``mastery api``
runs as its own process(es) and ``wrk`` (C, a separate process) loads it, as
issue 20 asks; without wrk the command says so and stops.

Each run: 2 s warm-up, then ``--seconds`` at 10 keep-alive connections
(1 wrk thread), reporting requests/s, p50/p99, every non-2xx/3xx answer, the
CPU of the API process(es) and of the Redis server, and the Redis server time
per request summed over the commands it sends (``INFO commandstats``: the
page script, or MULTI + EXEC around the script and the rows' MGET; see
:func:`server_us`).

Runs: a 100-row page (2 goals); the same with ``If-None-Match`` (304); the
registration endpoint (one row, 2 goals); ``GET /healthz`` (the floor of the
stack: routing, middleware, metrics and the HTTP server, no Redis); and the
100-row page again on 2 API processes (``--workers 2``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from app.devstack.embedded import EmbeddedRedis
from app.devstack.workload import DKT_PARTNER, assistments
from bench.pipeline import pct, run_raw_client, run_wrk, write_section
from infra.read_model import Projection, ReadModelKeys, RedisProjector
from infra.read_model.materialized import mark_materialized
from infra.settings import Settings
from infra.tokens import generate_secret, mint_token
from processors.catalog import Catalog
from processors.rows import derive_rows, goal_names, goal_template
from schemas.events import GoalDefined, LearningInstanceCreated
from tests.integration.live_api import ApiProcess, api_process, children_of
from tests.oracle import expected_states

DATA = Path("/work/shared/data/assistments2009/builder_train.csv")
PARAMS = Path("/work/shared/reference/bkt/params.json")
LEARNERS = 100
_TICK = os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the read model -----------------------------------------------------------


def seed(redis_url: str) -> tuple[str, list[str], str]:
    """Fold one class of the replay and write its read model; its learning
    instance, goals and one learner's registration."""
    w = assistments(
        DATA, params_path=PARAMS, learners_per_instance=LEARNERS, max_learners=LEARNERS
    )
    catalog = Catalog()
    for event in w.catalog:
        catalog.apply(event)
    states = expected_states(catalog, [*w.registrations, *w.attempts])
    keys = ReadModelKeys()
    projection = Projection(keys)
    for event in w.catalog:
        if isinstance(event, LearningInstanceCreated):
            projection.learning_instance(event)
        elif isinstance(event, GoalDefined):
            projection.goal(
                event, goal_template(event, catalog), goal_names(event, catalog)
            )
    learners = []
    for reg_id, folded in states.items():
        projection.registration(folded)
        for goal_id, row in derive_rows(folded, catalog):
            projection.row(folded.learning_instance_id, reg_id, goal_id, row)
        if folded.role == "learner":
            learners.append(reg_id)

    async def write() -> None:
        redis = Redis.from_url(redis_url)
        await RedisProjector(redis).write(projection)
        await mark_materialized(redis, "bench.api", keys)
        await redis.aclose()

    asyncio.run(write())
    li = w.learning_instances[0]
    return li, w.goals_of(li), learners[0]


# -- processes -----------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process and of its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14))


def pids_of(api: ApiProcess) -> list[int]:
    """The API's processes: the one started, and its children (--workers)."""
    return [api.proc.pid, *children_of(api.proc.pid)]


# -- load ----------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    key: str
    name: str
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]


def wrk(url: str, request: Request, seconds: float) -> dict[str, Any]:
    """The run through wrk (bench.pipeline.run_wrk)."""
    return run_wrk(
        url + request.path, request.method, request.body, request.headers, seconds
    )


_COMMANDS = ("evalsha", "multi", "exec")


def commandstats(redis: SyncRedis) -> dict[str, tuple[int, int]]:
    """(calls, usec) of the commands a page sends."""
    stats = redis.info("commandstats")
    out = {}
    for name in _COMMANDS:
        one = stats.get(f"cmdstat_{name}", {})
        out[name] = int(one.get("calls", 0)), int(one.get("usec", 0))
    return out


def server_us(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> tuple[float, float]:
    """Redis server time per request (every request runs the page script
    once) summed over the commands it sends, and the script's own time per
    call. A page read in a MULTI/EXEC (api/store.py) costs MULTI + EXEC,
    whose time includes the script and the MGET run inside it (valkey counts
    those again under their own names); any other request costs its
    top-level EVALSHA. In a run that mixes both, the top-level scripts' share
    of the EVALSHA time is taken as their share of the calls."""
    d = {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in after}
    scripts, script_usec = d["evalsha"]
    if not scripts:
        return 0.0, 0.0
    in_transactions = d["exec"][0]
    top = script_usec * max(0, scripts - in_transactions) / scripts
    total = top + d["multi"][1] + d["exec"][1]
    return total / scripts, script_usec / scripts


def python_client(url: str, request: Request, seconds: float) -> dict[str, Any]:
    """The fallback without wrk: bench.pipeline's asyncio raw-socket client in
    a process of its own (10 connections, closed loop, 2 s warm-up)."""
    port = int(url.rsplit(":", 1)[1])
    body = request.body or b""
    head = f"{request.method} {request.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if request.body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    for name, value in request.headers.items():
        head += f"{name}: {value}\r\n"
    lat, sizes, secs = run_raw_client(port, (head + "\r\n").encode() + body, seconds)
    good = sum(n for key, n in sizes.items() if key // 10_000_000 in (200, 304))
    return {
        "rps": len(lat) / secs,
        "p50": pct(lat, 0.5) * 1000,
        "p99": pct(lat, 0.99) * 1000,
        "n": len(lat),
        "bad": len(lat) - good,
    }


def measure(
    target: ApiProcess,
    redis_pid: int,
    redis: SyncRedis,
    request: Request,
    seconds: float,
) -> dict[str, Any]:
    # The response the load will repeat, checked once.
    check = urllib.request.Request(
        target.url + request.path,
        data=request.body,
        method=request.method,
        headers=request.headers,
    )
    try:
        with urllib.request.urlopen(check, timeout=5) as response:
            status, size = response.status, len(response.read())
    except urllib.error.HTTPError as exc:  # 304 arrives as an "error"
        status, size = exc.code, 0
    pids = pids_of(target)
    before = [cpu_ticks(p) for p in pids], cpu_ticks(redis_pid), commandstats(redis)
    started = time.monotonic()
    load = wrk if shutil.which("wrk") else python_client
    result = load(target.url, request, seconds)
    elapsed = time.monotonic() - started
    after = [cpu_ticks(p) for p in pids], cpu_ticks(redis_pid), commandstats(redis)
    per_page, script = server_us(before[2], after[2])
    result.update(
        key=request.key,
        name=request.name,
        status=status,
        size=size,
        processes=len(pids) - (1 if len(pids) > 1 else 0),
        api_cpu=(sum(after[0]) - sum(before[0])) / _TICK / elapsed,
        redis_cpu=(after[1] - before[1]) / _TICK / elapsed,
        server_us=per_page,
        script_us=script,
    )
    per = 1e6 / result["rps"] if result["rps"] else 0.0
    result["api_us"] = result["api_cpu"] * per
    result["redis_us"] = result["redis_cpu"] * per
    say(
        f"{request.name}: {result['rps']:,.0f} req/s, p50 {result['p50']:.2f} ms, "
        f"p99 {result['p99']:.2f} ms, API {result['api_cpu']:.0%} "
        f"({result['api_us']:.0f} us/req), Redis {result['redis_cpu']:.0%}, "
        f"server {result['server_us']:.0f} us/req (script {result['script_us']:.0f}), "
        f"non-2xx/3xx {result['bad']}"
    )
    return result


SECTION = "## Read path alone (`make bench-api`)"


def _verdict(value: float, target: float, higher_is_better: bool) -> str:
    if (value >= target) if higher_is_better else (value <= target):
        return "met"
    miss = (target - value) / target if higher_is_better else (value - target) / target
    return f"**MISS** by {miss:.0%}"


def verdicts(by: dict[str, dict[str, Any]]) -> list[str]:
    """The targets of issue 20, from one run."""
    lines = ["| figure | measured | target | verdict |", "| --- | --- | --- | --- |"]
    page = by.get("page")
    if page:
        lines.append(
            f"| one API process, 100-row page, c10 | {page['rps']:,.0f} req/s, p99 "
            f"{page['p99']:.2f} ms | ≥ 3,000 req/s, p99 ≤ 10 ms "
            f"| {_verdict(page['rps'], 3000, True)}; p99 "
            f"{_verdict(page['p99'], 10, False)} |"
        )
        lines.append(
            "| Redis server time per page (`INFO commandstats`, every command "
            f"it sends) | {page['server_us']:.0f} µs | ≤ 100 µs "
            f"| {_verdict(page['server_us'], 100, False)} |"
        )
    if "304" in by:
        r = by["304"]
        lines.append(
            f"| `304 Not Modified`, one process | {r['rps']:,.0f} req/s | ≥ 8,000 "
            f"req/s | {_verdict(r['rps'], 8000, True)} |"
        )
    if page and "page2" in by:
        ratio = by["page2"]["rps"] / page["rps"]
        lines.append(
            f"| two API processes / one | {ratio:.2f}x ({by['page2']['rps']:,.0f} "
            f"req/s) | ≥ 1.6x | {_verdict(ratio, 1.6, True)} |"
        )
    if "reg" in by:
        r = by["reg"]
        lines.append(
            f"| registration endpoint, one row | {r['rps']:,.0f} req/s | ≥ 5,000 "
            f"req/s | {_verdict(r['rps'], 5000, True)} |"
        )
    return lines


def report(rows: list[dict[str, Any]], rev: str, seconds: float) -> str:
    by = {r["key"]: r for r in rows}
    client = (
        "wrk (C, a process of its own), 1 thread"
        if shutil.which("wrk")
        else "the Python raw-socket client (wrk is not installed; its own CPU "
        "caps these figures), 1 process"
    )
    lines = [
        SECTION,
        "",
        f"`make bench-api` (`python -m bench.api`), git `{rev}`, "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, "
        f"{platform.machine()} with {os.cpu_count()} cores (shared); load: "
        f"{client}, 10 connections, {seconds:.0f} s per run after 2 s of warm-up; "
        f"a class of {LEARNERS} ASSISTments learners folded by the model and "
        "written by the worker's projector into the embedded valkey; no broker, "
        "no worker. One run: single figures. The load client, the API and valkey "
        f"share the {os.cpu_count()} cores.",
        "",
        *verdicts(by),
        "",
        "| run | API processes | answer | req/s | p50 / p99 ms | API CPU (µs/req) "
        "| Redis CPU (µs/req) | server µs/req (script) | not 2xx/3xx |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['processes']} | {r['status']}, {r['size']:,} B "
            f"| {r['rps']:,.0f} | {r['p50']:.2f} / {r['p99']:.2f} "
            f"| {r['api_cpu']:.0%} ({r['api_us']:.0f}) "
            f"| {r['redis_cpu']:.0%} ({r['redis_us']:.0f}) "
            f"| {r['server_us']:.0f} ({r['script_us']:.0f}) | {r['bad']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument(
        "--out", type=Path, default=None, help="replace (or add) its section here"
    )
    ap.add_argument(
        "--only",
        default=None,
        help="comma-separated runs: page,304,reg,floor,page2 (default: all)",
    )
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        say(
            "wrk is not installed (Debian: apt-get install wrk): falling back to "
            "the Python client, whose own cost caps the figures"
        )
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    secret = generate_secret()
    settings = Settings(auth_mode="jwt", jwt_hs256_secret=SecretStr(secret))  # type: ignore[call-arg]
    token = mint_token(
        settings, sub="bench", partner_id=DKT_PARTNER, roles=("partner_admin",)
    )
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    rows: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    with EmbeddedRedis().start() as server:
        say(f"seeding {LEARNERS} learners into {server.url} ...")
        li, goals, reg = seed(server.url)
        page = orjson.dumps({"goal_ids": goals, "registrations_per_page": 100})
        li_path = f"/learning-instances/{li}/metrics/status-and-progress"
        reg_path = f"/registrations/{reg}/metrics/status-and-progress"
        redis = SyncRedis.from_url(server.url)
        assert server.proc is not None
        redis_pid = server.proc.pid
        one_row = orjson.dumps({"goal_ids": goals})
        runs: list[tuple[int, Request]] = [
            (1, Request("page", "100-row page", "POST", li_path, page, auth)),
            (
                1,
                Request(
                    "304", "100-row page, If-None-Match", "POST", li_path, page, auth
                ),
            ),
            (
                1,
                Request(
                    "reg", "registration, one row", "POST", reg_path, one_row, auth
                ),
            ),
            (1, Request("floor", "GET /healthz (floor)", "GET", "/healthz", None, {})),
            (2, Request("page2", "100-row page", "POST", li_path, page, auth)),
        ]
        wanted = None if args.only is None else set(args.only.split(","))
        for workers in (1, 2):
            todo = [
                r
                for w, r in runs
                if w == workers and (wanted is None or r.key in wanted)
            ]
            if not todo:
                continue
            with api_process(
                server.url,
                secret,
                workdir,
                args=("--workers", str(workers)),
                MASTERY_LOG_LEVEL="WARNING",
            ) as a:
                for planned in todo:
                    request = planned
                    if planned.key == "304":
                        tag = _etag(a.url, planned)
                        request = Request(
                            planned.key,
                            planned.name,
                            planned.method,
                            planned.path,
                            planned.body,
                            {**planned.headers, "If-None-Match": tag},
                        )
                    rows.append(measure(a, redis_pid, redis, request, args.seconds))
    text = report(rows, rev, args.seconds)
    print(text)
    if args.out is not None:
        write_section(args.out, SECTION, text)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _etag(url: str, request: Request) -> str:
    check = urllib.request.Request(
        url + request.path, data=request.body, method="POST", headers=request.headers
    )
    with urllib.request.urlopen(check, timeout=5) as response:
        return str(response.headers["ETag"])


if __name__ == "__main__":
    raise SystemExit(main())
