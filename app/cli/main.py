"""The ``mastery`` command line.

mastery dev [--replay PATH]   embedded broker + Redis + worker + API + workload
mastery worker                the stream processor (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL)
mastery api                   the HTTP API (REDIS_URL)
mastery produce ...           stream a workload to the configured broker
mastery topics [--check]      create the topics as declared, refuse unsafe existing ones
mastery selfcheck             does the broker report end offsets correctly?
mastery broker-reset          accept the broker's log after it lost data
mastery model trace ...       run the BKT model offline over a CSV export
mastery model fit ...         fit BKT parameters by EM (CSV, DKT or the event log)
mastery model evaluate ...    next-attempt AUC, RMSE and log-loss of parameters

Each command's --help lists the environment variables it reads (app/cli/help.py);
the usual mistakes end in one line naming the setting to fix (app/cli/errors.py).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import functools
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from app.cli.errors import EX_CONFIG, bind_port, explain, explain_settings_error
from app.cli.help import EnvironmentHelp
from infra.logs import configure_logging
from infra.settings import Settings

__all__ = ["main"]

log = logging.getLogger("mastery")

#: commands that run to completion (not the long-running worker, api, dev)
_ONE_SHOT = frozenset(
    {
        "produce",
        "topics",
        "selfcheck",
        "token",
        "rebuild",
        "dlq",
        "model",
        "broker-reset",
    }
)


#: commands that serve until stopped: Ctrl-C is their normal end (exit 0)
_SERVERS = frozenset({"api", "worker", "dev"})


def _require(value: str | None, name: str) -> str:
    if not value:
        raise SystemExit(
            f"error: {name} is not set (or run `mastery dev` for the embedded stack)"
        )
    return value


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it exists (a dependency off Windows), else asyncio's loop.

    The worker's per-event cost is mostly event-loop and Faust machinery,
    which uvloop runs faster (measured in docs/benchmarks.md).
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    import faust

    from app.worker.broker_watch import check_before_start, loss_first
    from app.worker.faust_corrections.guards import GroupProbes
    from app.worker.wiring import create_worker
    from infra.broker import ensure_topics, profile_for, verify_broker
    from infra.kafka_security import kafka_client_kwargs
    from infra.topic_names import TopicNames

    bootstrap = _require(settings.kafka_bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
    redis_url = _require(settings.redis_url, "REDIS_URL")
    profile = profile_for(settings)
    loop = _event_loop()
    asyncio.set_event_loop(loop)

    async def prepare() -> None:
        # A wrong REDIS_URL as one line and exit 69, before anything else
        # (docs/operations.md, "The CLI").
        await _wait_for_redis(redis_url, cluster=settings.redis_cluster)
        # Before topics are created again: exits 65 if the broker lost data.
        await check_before_start(settings, bootstrap, redis_url)
        # Creates missing topics; refuses (exit 78) ones that would lose data.
        await ensure_topics(settings, bootstrap)
        # A missing group ACL as one explained line, not a silent Faust wait.
        await GroupProbes(
            bootstrap, settings.worker_id, profile, kafka_client_kwargs(settings)
        ).check_access(TopicNames(settings.topic_prefix).registration_events)
        await verify_broker(settings, bootstrap)

    loop.run_until_complete(prepare())
    log.info("broker profile: %s", profile)
    worker = create_worker(settings, profile, bootstrap, redis_url)
    faust_worker = faust.Worker(
        worker.app,
        loglevel=settings.log_level.lower(),
        loop=loop,
        quiet=True,
        # Keep the handlers of infra.logs (JSON, rate limit) instead of mode's.
        override_logging=False,
    )
    # Faust's start-up spinner (faust 0.15.3, faust/worker.py) prints the
    # terminal's show-cursor code "\x1b[?25h" when start-up ends, even when
    # stdout is a log file (Spinner.finish does not check isatty).
    faust_worker.spinner = None
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as exc:
        # A Faust service crashed: mode re-raises its reason once the loop is
        # closed and turns it into exit 1. A broker restarted on empty disks
        # can be the cause, e.g. Faust's assignor asserting on topics
        # auto-created anew with other partition counts: then the exit is the
        # loss's (65, not restarted).
        if exc.code not in (0, None):
            asyncio.run(
                loss_first(
                    functools.partial(
                        check_before_start, settings, bootstrap, redis_url
                    ),
                    15,
                )
            )
        raise
    return 0


def cmd_notifier(settings: Settings, args: argparse.Namespace) -> int:
    """Deliver status changes to the partners' webhooks (app/notifier/service.py)."""
    import signal

    from app.notifier.service import Notifier
    from infra.broker import ensure_topics, profile_for

    bootstrap = _require(settings.kafka_bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
    redis_url = _require(settings.redis_url, "REDIS_URL")
    profile = profile_for(settings)
    loop = _event_loop()
    asyncio.set_event_loop(loop)

    async def run() -> None:
        await _wait_for_redis(redis_url, cluster=settings.redis_cluster)
        await ensure_topics(settings, bootstrap)
        notifier = Notifier(settings, profile, bootstrap, redis_url)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, notifier.stop)
        log.info("notifier started (broker profile: %s)", profile)
        await notifier.run()
        log.info(
            "notifier stopped: %d delivered, %d failed attempts, %d dead-lettered, "
            "%d refused by a full outbox",
            notifier.stats.delivered,
            notifier.stats.failed,
            notifier.stats.dead_lettered,
            notifier.stats.outbox_full,
        )

    loop.run_until_complete(run())
    return 0


#: A worker's wait for Redis at start, in seconds between pings (a Redis
#: started beside it may need a few seconds); then it gives up with exit 69.
REDIS_START_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)


async def _wait_for_redis(redis_url: str, *, cluster: bool = False) -> None:
    """Return once Redis answers a PING; raise the last connection error
    (``app.cli.errors.explain`` makes it one line, exit 69) after
    :data:`REDIS_START_BACKOFF_S`. Without this, a worker whose Redis is
    unreachable started Faust and crashed in its first task: 150 log lines,
    two tracebacks and an exit a supervisor reads as "restart me"."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from infra.redis_client import redis_client

    client = redis_client(
        redis_url, cluster=cluster, socket_timeout=2.0, socket_connect_timeout=2.0
    )
    try:
        for pause in (*REDIS_START_BACKOFF_S, None):
            try:
                await client.ping()
                return
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if pause is None:
                    raise
                log.debug("Redis not reachable yet (%s); again in %.1f s", exc, pause)
                await asyncio.sleep(pause)
    finally:
        await client.aclose()


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise SystemExit("error: --workers must be at least 1")
    if args.workers == 1:
        return _serve_api(settings, args)
    from app.cli.api_processes import multiprocess_metrics

    # Before the API's modules import prometheus_client (its mode is read then).
    with multiprocess_metrics():
        return _serve_api(settings, args)


def _serve_api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_api
    from api.http_server import http_protocol
    from api.tokens import AuthConfigError

    redis_url = _require(settings.redis_url, "REDIS_URL")
    try:
        app = create_api(settings)  # one process: it serves; several: a check
    except AuthConfigError as exc:
        raise SystemExit(f"error: {exc}") from exc
    sock = bind_port(
        args.host or settings.api_host,
        args.port if args.port is not None else settings.api_port,
    )
    _warn_if_redis_unreachable(redis_url, cluster=settings.redis_cluster)
    # Listening before the line is printed: a client that connects at once
    # waits in the backlog until uvicorn accepts, rather than being refused.
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    processes = f", {args.workers} processes" if args.workers > 1 else ""
    print(
        f"mastery api listening on http://{shown}:{port}{processes} (docs /docs, "
        "dashboard /dashboard, readiness /readyz); Ctrl-C stops it",
        flush=True,
    )

    def serve(app: object) -> None:
        config = uvicorn.Config(
            app,  # type: ignore[arg-type]
            log_level="warning",
            # None: uvicorn's loggers propagate to the handlers of infra.logs.
            log_config=None,
            access_log=False,
            loop="uvloop" if sys.platform != "win32" else "asyncio",
            # 431 for a head over the size limit, 408 for one too slow (slowloris)
            http=http_protocol(settings.api_head_timeout_s),
            # uvicorn's name for the request-head limit; our protocol enforces
            # it (431).
            h11_max_incomplete_event_size=settings.api_max_header_bytes,
            timeout_keep_alive=settings.api_keep_alive_timeout_s,
        )
        uvicorn.Server(config).run(sockets=[sock])

    if args.workers == 1:
        serve(app)
        return 0
    from app.cli.api_processes import serve_forked

    del app  # each process builds its own (its own Redis connections)
    return serve_forked(args.workers, lambda: serve(create_api(settings)))


def _warn_if_redis_unreachable(redis_url: str, *, cluster: bool = False) -> None:
    """One warning at start: the API serves anyway (reads answer 503 and
    /readyz fails until Redis answers), but a wrong REDIS_URL should not wait
    for the first request to show."""
    from redis.exceptions import RedisError

    from app.cli.errors import redact_url
    from infra.redis_client import sync_redis_client

    client = sync_redis_client(
        redis_url, cluster=cluster, socket_timeout=2.0, socket_connect_timeout=2.0
    )
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        log.warning(
            "cannot reach Redis at %s (%s): serving anyway; reads answer 503 and "
            "/readyz fails until it answers; check REDIS_URL",
            redact_url(redis_url),
            exc,
        )
    finally:
        client.close()


def _workload(settings: Settings, args: argparse.Namespace) -> object:
    from app.devstack.workload import assistments, simulated

    if args.replay:
        path = Path(args.replay)
        if not path.exists():
            raise SystemExit(f"error: --replay file not found: {path}")
        return assistments(
            path,
            params_path=settings.shared_dir / "reference" / "bkt" / "params.json",
            max_learners=args.max_learners,
        )
    return simulated(
        learning_instances=args.instances, learners_per_instance=args.learners
    )


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from app.devstack.workload import Workload, produce

    bootstrap = _require(settings.kafka_bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
    workload = _workload(settings, args)
    assert isinstance(workload, Workload)
    asyncio.run(produce(settings, bootstrap, workload))
    return 0


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from infra.topic_specs import apply_topic_specs

    bootstrap = _require(settings.kafka_bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
    report = asyncio.run(apply_topic_specs(settings, bootstrap, create=not args.check))
    for spec in report.specs:
        configs = " ".join(f"{k}={v}" for k, v in spec.configs.items())
        verb = "created" if spec.name in report.created else "verified"
        print(
            f"{verb} {spec.name}: {spec.partitions} partitions, replication "
            f"{spec.replication}, {configs}",
            flush=True,
        )
    return 0


def cmd_selfcheck(settings: Settings, args: argparse.Namespace) -> int:
    from infra.broker import self_check
    from infra.kafka_security import kafka_client_kwargs
    from infra.topic_names import TopicNames

    bootstrap = _require(settings.kafka_bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
    check = asyncio.run(
        self_check(
            bootstrap,
            TopicNames(settings.topic_prefix),
            client_kwargs=kafka_client_kwargs(settings),
        )
    )
    print(check.describe())
    return 0 if check.reports_offsets_correctly else 3


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from infra.tokens import MintError, mint_token

    roles: list[str] = [] if args.no_role else (args.role or ["partner_admin"])
    try:
        token = mint_token(
            settings,
            sub=args.sub,
            partner_id=args.partner or settings.token_partner_id,
            roles=roles,
            ttl_s=args.ttl,
        )
    except MintError as exc:
        raise SystemExit(
            f"error: {exc} (against a running `mastery dev`: "
            "set -a; . var/dev.env; set +a)"
        ) from exc
    print(token)
    return 0


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.rebuild import RebuildRefused, rebuild

    bootstrap = _require(settings.kafka_bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
    redis_url = _require(settings.redis_url, "REDIS_URL")
    try:
        report = asyncio.run(rebuild(settings, bootstrap, redis_url, flush=args.flush))
    except RebuildRefused as exc:
        raise SystemExit(f"error: mastery rebuild refused: {exc}") from exc
    print(
        f"rebuilt the read model: {report.registrations:,} registrations, "
        f"{report.rows:,} rows, {report.catalog_events:,} catalog events, "
        f"{report.keys_written:,} keys written (generation {report.generation}"
        + (
            f", {report.keys_deleted:,} keys of the old one deleted)"
            if args.flush
            else ")"
        )
    )
    return 0


def cmd_broker_reset(settings: Settings, args: argparse.Namespace) -> int:
    from app.worker.broker_watch import BrokerWatch, reset
    from infra.redis_client import redis_client
    from schemas.broker_status import BrokerLoss

    bootstrap = _require(settings.kafka_bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
    redis_url = _require(settings.redis_url, "REDIS_URL")

    async def go() -> tuple[BrokerLoss | None, dict[tuple[str, int], int]]:
        redis = redis_client(
            redis_url, cluster=settings.redis_cluster, socket_timeout=5.0
        )
        try:
            return await reset(BrokerWatch.of_worker(settings, redis, bootstrap))
        finally:
            await redis.aclose()

    reported, now = asyncio.run(go())
    print(f"cleared: {reported.describe()}" if reported else "no loss was reported")
    print(
        f"recorded the broker's end offsets of {len(now)} partitions as seen "
        '(docs/operations.md, "The broker restarted empty")'
    )
    return 0


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.dlq import pending_dead_letters, redrive
    from infra.broker import profile_for
    from infra.kafka_security import kafka_client_kwargs
    from infra.topic_names import TopicNames

    bootstrap = _require(settings.kafka_bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
    topics = TopicNames(settings.topic_prefix)
    security = kafka_client_kwargs(settings)
    view = asyncio.run(
        pending_dead_letters(
            bootstrap, topics, profile_for(settings), client_kwargs=security
        )
    )
    letters = [
        d
        for d in view.pending
        if args.reason_contains is None or args.reason_contains in d.reason
    ]
    if args.dlq_command == "list":
        for d in letters[: args.limit]:
            value = (d.value or b"")[:200].decode(errors="replace")
            if d.truncated:
                value = f"[truncated: {d.value_size:,} bytes, sha256 {d.value_sha256}]"
            print(f"{d.dlq_key}\t{d.rejected_at.isoformat()}\t{d.reason}\t{value}")
        print(
            f"{len(letters):,} pending ({view.redriven:,} re-driven, "
            f"{view.duplicates:,} duplicate rejections)",
            file=sys.stderr,
        )
        return 0
    n = asyncio.run(
        redrive(
            bootstrap, profile_for(settings), topics, letters, client_kwargs=security
        )
    )
    kept = sum(1 for d in letters if d.truncated)
    print(
        f"re-drove {n:,} records"
        + (f"; {kept:,} too large to carry whole were not re-driven" if kept else "")
    )
    return 0


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from app.devstack.stack import run_dev

    if args.workers < 1:
        raise SystemExit("error: --workers must be at least 1")
    if "api_port" not in settings.model_fields_set:
        settings = settings.model_copy(update={"api_port": 0})  # a free port
    return run_dev(
        settings,
        workload=None if args.empty else _workload(settings, args),
        exit_after=args.exit_after,
        workers=args.workers,
    )


def cmd_model_trace(settings: Settings, args: argparse.Namespace) -> int:
    from processors.mastery import DEFAULT_PARAMS
    from processors.trace import TraceError, load_params, trace_rows

    try:
        params = load_params(Path(args.params).read_text())
        with Path(args.attempts).open(newline="") as fh:
            reader = csv.DictReader(fh)
            needed = {"order_id", "user_id", "skill_name", "correct"}
            missing = needed - set(reader.fieldnames or [])
            if missing:
                raise SystemExit(
                    f"error: {args.attempts} lacks columns {sorted(missing)}"
                )
            out = csv.writer(sys.stdout, lineterminator="\n")
            out.writerow(["order_id", "p_correct", "p_mastered"])
            default = DEFAULT_PARAMS if args.default_params else None
            for order_id, p_correct, p_mastered in trace_rows(
                params, reader, default=default
            ):
                out.writerow([order_id, repr(p_correct), repr(p_mastered)])
    except (OSError, TraceError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    return 0


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    parser = argparse.ArgumentParser(
        prog="mastery",
        description="mastery-stream: live status and progress of adaptive "
        "assignments (graded attempts on Kafka -> worker -> Redis -> HTTP API).",
        epilog="Each command's --help lists the environment variables it reads; "
        "`mastery dev` runs the whole system on an embedded broker and Redis.",
    )
    parser.add_argument(
        "--version", action="version", version=f"mastery {version('mastery-stream')}"
    )
    sub = EnvironmentHelp(parser.add_subparsers(dest="command", required=True))

    def workload_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--replay", metavar="PATH", help="ASSISTments/DKT-format file to replay"
        )
        p.add_argument(
            "--max-learners",
            type=int,
            default=None,
            help="with --replay: first N learners",
        )
        p.add_argument(
            "--instances", type=int, default=3, help="simulated learning instances"
        )
        p.add_argument(
            "--learners", type=int, default=40, help="simulated learners per instance"
        )

    p_dev = sub.add_parser(
        "dev", help="run the whole system on the embedded broker and Redis"
    )
    workload_args(p_dev)
    p_dev.add_argument(
        "--exit-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop by itself after this long (default: until Ctrl-C)",
    )
    p_dev.add_argument(
        "--empty", action="store_true", help="stream no workload (start empty)"
    )
    p_dev.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes in one consumer group (default: the machine's cores)",
    )
    p_dev.set_defaults(func=cmd_dev)

    sub.add_parser("worker", help="run the stream processor").set_defaults(
        func=cmd_worker
    )

    sub.add_parser(
        "notifier", help="deliver status changes to webhooks (docs/webhooks.md)"
    ).set_defaults(func=cmd_notifier)

    p_api = sub.add_parser("api", help="serve the HTTP API")
    p_api.add_argument("--host", default=None)
    p_api.add_argument("--port", type=int, default=None)
    p_api.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes on the one port (default 1): each uses a core; the "
        "parent restarts one that crashes (docs/operations.md)",
    )
    p_api.set_defaults(func=cmd_api)

    p_prod = sub.add_parser(
        "produce", help="stream a workload to KAFKA_BOOTSTRAP_SERVERS"
    )
    workload_args(p_prod)
    p_prod.set_defaults(func=cmd_produce)

    p_token = sub.add_parser(
        "token",
        help="mint a development token (HS256, MASTERY_JWT_HS256_SECRET)",
        description=textwrap.fill(
            "Mint an HS256 token. With no options it is a partner admin of "
            "MASTERY_TOKEN_PARTNER_ID, which a running `mastery dev` writes to "
            "var/dev.env: it reads every row of the demo (set -a; . var/dev.env; "
            "set +a; mastery token).",
            width=79,
        ),
    )
    p_token.add_argument(
        "--sub", default="dev-admin", help="user id, claim sub (default: dev-admin)"
    )
    p_token.add_argument(
        "--partner",
        default=None,
        help="claim partner_id (default: MASTERY_TOKEN_PARTNER_ID, partner-demo)",
    )
    roles = p_token.add_mutually_exclusive_group()
    roles.add_argument(
        "--role",
        action="append",
        choices=["partner_admin", "ingest"],
        help="claim roles, repeatable (default: partner_admin)",
    )
    roles.add_argument(
        "--no-role",
        action="store_true",
        help="no role: a plain user, who reads only what its sub is registered "
        "to (its own registration; a learning instance it is an instructor of)",
    )
    p_token.add_argument(
        "--ttl", type=int, default=3600, help="seconds until exp (default: 3600)"
    )
    p_token.set_defaults(func=cmd_token)

    p_rebuild = sub.add_parser(
        "rebuild",
        help="re-materialize the Redis read model from the worker's changelog",
    )
    p_rebuild.add_argument(
        "--flush",
        action="store_true",
        help="build a new generation and switch to it (stale keys go); "
        "refused if it would hold less than the live one",
    )
    p_rebuild.set_defaults(func=cmd_rebuild)

    sub.add_parser(
        "broker-reset",
        help="after the broker lost data: clear the report that stops workers and "
        "ingest, and record the broker's end offsets as they are now",
    ).set_defaults(func=cmd_broker_reset)

    p_dlq = sub.add_parser("dlq", help="list or re-drive dead-lettered records")
    dlq_sub = EnvironmentHelp(
        p_dlq.add_subparsers(dest="dlq_command", required=True), "dlq"
    )
    for name, text in (
        ("list", "list pending rejections"),
        ("redrive", "produce them again"),
    ):
        p = dlq_sub.add_parser(name, help=text)
        p.add_argument("--reason-contains", default=None, metavar="TEXT")
        p.add_argument("--limit", type=int, default=100)
        p.set_defaults(func=cmd_dlq)

    p_topics = sub.add_parser(
        "topics",
        help="create the topics with their declared settings (infra/topic_specs.py) "
        "and refuse existing ones whose settings would lose data (exit 78)",
    )
    p_topics.add_argument(
        "--check",
        action="store_true",
        help="only verify: create nothing, and refuse missing topics too",
    )
    p_topics.set_defaults(func=cmd_topics)

    sub.add_parser("selfcheck", help="check the broker's end offsets").set_defaults(
        func=cmd_selfcheck
    )

    p_model = sub.add_parser("model", help="the mastery model, offline")
    model_sub = EnvironmentHelp(
        p_model.add_subparsers(dest="model_command", required=True), "model"
    )
    p_trace = model_sub.add_parser(
        "trace", help="P(correct), P(mastered) before each attempt"
    )
    p_trace.add_argument(
        "--params",
        required=True,
        help="JSON: skill -> {prior, learn, guess, slip[, forget]} (pyBKT's "
        "params.json; its params-forgets.json's 'forgets' is read as forget)",
    )
    p_trace.add_argument(
        "--attempts", required=True, help="CSV: order_id,user_id,skill_name,correct"
    )
    p_trace.add_argument(
        "--default-params",
        action="store_true",
        help="use the default parameters for skills missing from PARAMS (else: error)",
    )
    p_trace.set_defaults(func=cmd_model_trace)
    from app.cli.model import add_commands

    add_commands(model_sub)
    return parser


def _is_topic_error(exc: Exception) -> bool:
    """A topic the broker refused or whose settings would lose data (exit 78).

    Looked up lazily: commands that never loaded infra.topic_specs (and its
    client library) cannot raise it. (Its place is app.cli.errors.explain.)
    """
    module = sys.modules.get("infra.topic_specs")
    return module is not None and isinstance(exc, module.TopicError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        bad = explain_settings_error(exc)
        print(f"error: {bad.message}", file=sys.stderr)
        return bad.exit_code
    configure_logging(settings)
    if args.command in _ONE_SHOT and settings.log_level != "DEBUG":
        # A one-shot command's connection failure ends in one explained line;
        # aiokafka's own error lines would only repeat it.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        result: int = args.func(settings, args)
    except KeyboardInterrupt:
        # Ctrl-C is how a server started in a terminal is stopped: no traceback.
        print("\nstopped (Ctrl-C)", file=sys.stderr)
        return 0 if args.command in _SERVERS else 130
    except Exception as exc:
        if _is_topic_error(exc):
            print(f"error: {exc}", file=sys.stderr)
            return EX_CONFIG
        problem = explain(exc, settings)
        if problem is None:
            raise
        log.debug("one-line error explained", exc_info=True)
        print(f"error: {problem.message}", file=sys.stderr)
        return problem.exit_code
    return result


if __name__ == "__main__":
    raise SystemExit(main())
