"""The whole system on one machine: embedded broker and Redis, worker and API.

Used by ``mastery dev`` (``make demo``), the end-to-end tests and the
benchmark. The worker and the API run as their own processes, exactly as in
production, pointed at the embedded servers through the same environment
variables production uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from app.devstack.embedded import EmbeddedRedis, EmbeddedRedisCluster, free_port
from app.devstack.embedded_kafka import EmbeddedKafka, KafkaCluster
from app.worker.faust_corrections.exit_policy import EXIT_BROKER_LOST
from infra.settings import Settings
from infra.tokens import generate_secret, mint_token

__all__ = ["RESTART_EXIT_CODE", "DevStack", "broker_loss_message", "run_dev"]

#: A worker exits with this code to be restarted (EX_TEMPFAIL).
RESTART_EXIT_CODE = 75


class DevStack:
    """Starts and stops the embedded servers and the worker/API processes."""

    def __init__(
        self,
        settings: Settings,
        *,
        log_dir: Path | None = None,
        kafka: KafkaCluster | None = None,
        shared_kafka: bool = False,
    ) -> None:
        self.settings = settings
        #: Apache Kafka: one node unless a cluster is given (the fault tests
        #: pass three).
        self.kafka: KafkaCluster = kafka or EmbeddedKafka()
        #: A broker others use too (the tests' session broker): started here
        #: only if it is not running, never stopped here. Each stack's topic
        #: prefix keeps its topics and consumer group apart.
        self.shared_kafka = shared_kafka
        self.redis = EmbeddedRedis()
        #: With ``settings.redis_cluster``, a three-master Redis Cluster
        #: serves the read model instead of :attr:`redis` (the cluster tests).
        self.redis_cluster = EmbeddedRedisCluster() if settings.redis_cluster else None
        self.api_port = settings.api_port if settings.api_port else free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="mastery-dev-"))
        self.log_dir = log_dir or self.workdir
        self.workers: list[subprocess.Popen[bytes]] = []
        self.api: subprocess.Popen[bytes] | None = None
        self.notifiers: list[subprocess.Popen[bytes]] = []
        # The embedded stack's API authenticates like production, with a
        # random HS256 secret made for this run (`token()` mints tokens).
        self.jwt_secret = generate_secret()
        self._stopping = False
        self._retired: set[int] = set()  # terminated on purpose: not restarted
        #: each worker's own variables (its metrics port), kept for a restart
        self._worker_env: dict[str, dict[str, str]] = {}

    def token(
        self,
        *,
        sub: str = "dev-admin",
        partner_id: str = "partner-demo",
        roles: tuple[str, ...] = ("partner_admin",),
        ttl_s: int = 24 * 3600,
    ) -> str:
        """A bearer token the stack's API accepts."""
        settings = self.settings.model_copy(
            update={"jwt_hs256_secret": SecretStr(self.jwt_secret), "auth_mode": "jwt"}
        )
        return mint_token(
            settings, sub=sub, partner_id=partner_id, roles=roles, ttl_s=ttl_s
        )

    @property
    def redis_url(self) -> str:
        """The read model's Redis (the cluster's first node, with one)."""
        return self.redis.url if self.redis_cluster is None else self.redis_cluster.url

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.kafka.bootstrap_servers,
            REDIS_URL=self.redis_url,
            MASTERY_REDIS_CLUSTER="1" if self.redis_cluster else "0",
            MASTERY_BROKER_PROFILE="kafka",
            MASTERY_TOPIC_PREFIX=self.settings.topic_prefix,
            MASTERY_TOPIC_PARTITIONS=str(self.settings.topic_partitions),
            MASTERY_TOPIC_REPLICATION=str(self.settings.topic_replication),
            # A killed worker's partitions move after 10 s, not 30: the
            # failover tests and the demo's restarts wait for it.
            MASTERY_BROKER_SESSION_TIMEOUT_S="10",
            MASTERY_LOG_LEVEL=self.settings.log_level,
            MASTERY_AUTH_MODE="jwt",
            MASTERY_JWT_HS256_SECRET=self.jwt_secret,
            # Webhook receivers of a development stack run on this machine.
            MASTERY_WEBHOOKS_ALLOW_PRIVATE_URLS="true",
            # Children's logs go to files: unbuffered, so a killed process
            # leaves every line it wrote.
            PYTHONUNBUFFERED="1",
        )
        if self.settings.broker_session_timeout_s is not None:
            # every worker, also one the supervisor restarts (crash soak)
            env["MASTERY_BROKER_SESSION_TIMEOUT_S"] = str(
                self.settings.broker_session_timeout_s
            )
        env.update(extra)
        return env

    def start_servers(self) -> None:
        """Start the broker and Redis, and create the topics (as production does
        before any producer runs), with their declared settings."""
        from infra.topic_specs import apply_topic_specs

        if not (self.shared_kafka and self.kafka.proc is not None):
            self.kafka.start()
        if self.redis_cluster is None:
            self.redis.start()
        else:
            self.redis_cluster.start()
        asyncio.run(apply_topic_specs(self.settings, self.kafka.bootstrap_servers))

    def start_worker(
        self,
        name: str = "worker-1",
        *,
        wipe_data: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        data_dir = self.workdir / name
        if wipe_data:
            shutil.rmtree(data_dir, ignore_errors=True)
        # Kept for the supervisor's restart of this worker (its metrics port);
        # a caller's own start of the name begins from what it passes.
        self._worker_env[name] = dict(extra_env or {})
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            env=self.env(MASTERY_DATA_DIR=str(data_dir), **(extra_env or {})),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        threading.Thread(target=self._supervise, args=(proc, name), daemon=True).start()
        return proc

    def _supervise(self, proc: subprocess.Popen[bytes], name: str) -> None:
        """Restart a worker that asks for it (exit code 75: records skipped,
        a failed checkpoint; app/worker/faust_corrections/exit_policy.py), as a
        production supervisor would; never one that found the broker's data
        lost (65, app/worker/broker_watch.py)."""
        code = proc.wait()
        if (
            code == RESTART_EXIT_CODE
            and not self._stopping
            and proc.pid not in self._retired
        ):
            self.start_worker(name, extra_env=self._worker_env.get(name))

    def start_notifier(
        self,
        name: str = "notifier-1",
        *,
        extra_env: dict[str, str] | None = None,
        metrics_port: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """A ``mastery notifier`` process (app/notifier/service.py); with
        ``metrics_port``, its /metrics, /healthz and /readyz on loopback."""
        log = (self.log_dir / f"{name}.log").open("ab")
        metrics = (
            {}
            if metrics_port is None
            else {
                "MASTERY_METRICS_HOST": "127.0.0.1",
                "MASTERY_METRICS_PORT": str(metrics_port),
            }
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "notifier"],
            env=self.env(**{**metrics, **(extra_env or {})}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.notifiers.append(proc)
        return proc

    def start_api(self) -> None:
        log = (self.log_dir / "api.log").open("ab")
        self.api = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "api", "--port", str(self.api_port)],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(
                    f"API exited with {self.api.returncode}; see {log.name}"
                )
            with contextlib.suppress(OSError, urllib.error.URLError):
                urllib.request.urlopen(f"{self.api_url}/healthz", timeout=1).read()
                return
            time.sleep(0.1)
        raise RuntimeError("API did not become healthy within 30 s")

    def start(self, workers: int = 1) -> DevStack:
        self.start_servers()
        for i in range(workers):
            self.start_worker(f"worker-{i + 1}")
        self.start_api()
        return self

    def stop_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one worker gracefully (SIGTERM); it is not restarted."""
        self._terminate(proc)

    def _terminate(
        self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM
    ) -> None:
        self._retired.add(proc.pid)
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def stop(self, *, keep_logs: bool = False) -> None:
        """Stop everything; the work folder (logs included) goes unless kept."""
        self._stopping = True
        for proc in [
            *self.workers,
            *self.notifiers,
            *([self.api] if self.api else []),
        ]:
            self._terminate(proc)
        self.workers.clear()
        self.notifiers.clear()
        self.api = None
        self.redis.stop()
        if self.redis_cluster is not None:
            self.redis_cluster.stop()
        if not self.shared_kafka:
            self.kafka.stop()
        if not keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DevStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def post_json(
    url: str, body: object, *, token: str | None = None, timeout: float = 5.0
) -> tuple[int, object]:
    """POST JSON with the standard library; returns (status, decoded body)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url, data=orjson.dumps(body), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null")


#: Written by ``mastery dev`` for other terminals (``set -a; . var/dev.env``).
DEV_ENV_FILE = Path("var/dev.env")


def run_dev(
    settings: Settings,
    *,
    workload: object | None,
    exit_after: float | None,
    workers: int = 1,
) -> int:
    """``mastery dev``: start everything, stream the workload, print a curl.

    ``workload=None`` (``--empty``) streams nothing.
    """
    from app.devstack.workload import Workload, produce

    assert workload is None or isinstance(workload, Workload)
    # SIGTERM (a supervisor, `timeout`) stops the stack like Ctrl-C does: its
    # children run in sessions of their own and would outlive the parent.
    signal.signal(signal.SIGTERM, _interrupt)
    stack = DevStack(settings)
    started = time.monotonic()
    failed = False
    try:
        print(
            "starting the embedded Apache Kafka broker (KRaft, one node) and "
            "valkey server ...",
            flush=True,
        )
        stack.start_servers()
        print(
            f"  broker  {stack.kafka.bootstrap_servers} (Apache Kafka "
            f"{stack.kafka.distribution.version}, started in "
            f"{stack.kafka.start_seconds:.1f} s)\n  redis   {stack.redis_url}\n"
            f"  logs    {stack.log_dir}",
            flush=True,
        )
        ports = [free_port() for _ in range(workers)]
        print(f"starting {workers} worker(s), the API and the notifier ...", flush=True)
        for i, port in enumerate(ports):
            stack.start_worker(
                f"worker-{i + 1}",
                extra_env={
                    "MASTERY_METRICS_HOST": "127.0.0.1",
                    "MASTERY_METRICS_PORT": str(port),
                },
            )
        stack.start_api()
        notifier_port = free_port()
        stack.start_notifier(metrics_port=notifier_port)
        _write_env_file(stack, metrics_ports=ports, notifier_port=notifier_port)
        print(f"  API     {stack.api_url}", flush=True)
        for i, port in enumerate(ports):
            print(
                f"  worker-{i + 1} metrics {_metrics_url(port)} "
                f"(/healthz, /readyz on the same port)",
                flush=True,
            )
        print(f"  notifier metrics {_metrics_url(notifier_port)}", flush=True)
        print(
            f"  env     {DEV_ENV_FILE} (in another "
            f"terminal: set -a; . {DEV_ENV_FILE}; set +a; mastery token ...)",
            flush=True,
        )
        if workload is None:
            partner = "partner-demo"
            print("\n--empty: no workload; produce events to the API or the broker.")
        else:
            print(
                f"streaming {len(workload.catalog)} catalog events, "
                f"{len(workload.registrations)} registrations, "
                f"{len(workload.attempts):,} attempts ...",
                flush=True,
            )
            asyncio.run(produce(settings, stack.kafka.bootstrap_servers, workload))
            total = len(workload.registrations) + len(workload.attempts)
            if not _show_backlog(stack, ports, total, deadline_s=300):
                failed = True
                print(
                    f"the workload was not applied within 300 s; see the logs in "
                    f"{stack.log_dir}",
                    file=sys.stderr,
                )
                return 1
            partner = _show_rows(stack, workload, started)
        # `mastery token` in another terminal mints for this partner.
        _write_env_file(
            stack, partner, metrics_ports=ports, notifier_port=notifier_port
        )
        token = stack.token(sub="demo-admin", partner_id=partner)
        print(
            f"a partner-admin token for {partner!r}, valid 24 h "
            "(`mastery token` mints more):\n"
        )
        print(f"export TOKEN={token}\n")
        print("Ctrl-C stops everything.", flush=True)
        end = None if exit_after is None else time.monotonic() + exit_after
        last_lag = -1
        while end is None or time.monotonic() < end:
            for proc in [*stack.workers, stack.api]:
                restarted = proc is not None and proc.returncode == RESTART_EXIT_CODE
                if proc is not None and proc.poll() is not None and not restarted:
                    failed = True
                    print(
                        broker_loss_message(stack)
                        if proc.returncode == EXIT_BROKER_LOST
                        else f"a child process exited with code {proc.returncode} "
                        f"({proc.args!r}); stopping; its log is kept in "
                        f"{stack.log_dir}",
                        file=sys.stderr,
                    )
                    return 1
            lag = _scrape(ports).get("mastery_worker_consumer_lag")
            if lag is not None and int(lag) != last_lag:
                last_lag = int(lag)
                print(f"\r  live: consumer lag {last_lag:,} records   ", end="")
                sys.stdout.flush()
            time.sleep(0.5)
        print()
        return 0
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        DEV_ENV_FILE.unlink(missing_ok=True)
        stack.stop(keep_logs=failed)
        if failed:
            print(f"logs kept in {stack.log_dir}", file=sys.stderr)


def broker_loss_message(stack: DevStack) -> str:
    """What ``mastery dev`` says when a worker stopped with code 65: the
    reported loss (schemas/broker_status.py) and what to do."""
    from redis.exceptions import RedisError

    from infra.read_model import ReadModelKeys
    from infra.redis_client import sync_redis_client
    from schemas.broker_status import RUNBOOK, BrokerLoss

    reason = "(no report found in Redis)"
    try:
        client = sync_redis_client(
            stack.redis_url, cluster=stack.redis_cluster is not None, socket_timeout=2.0
        )
        raw = client.get(ReadModelKeys().broker_loss())
        if raw is not None:
            reason = BrokerLoss.stored(raw).describe()
    except (RedisError, OSError) as exc:
        reason = f"(cannot read the report: {exc!r})"
    return (
        f"\na worker stopped (exit code {EXIT_BROKER_LOST}): {reason}\n"
        "It is not restarted: its state no longer matches the broker's log. The "
        "embedded broker keeps everything in memory, so start `mastery dev` again "
        f"for a fresh stack ({RUNBOOK}). Logs are kept in {stack.log_dir}."
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _metrics_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/metrics"


def _write_env_file(
    stack: DevStack,
    partner: str | None = None,
    *,
    metrics_ports: list[int],
    notifier_port: int | None = None,
) -> None:
    """What another terminal needs to talk to this stack (`mastery token`,
    `mastery dlq`, `mastery rebuild`, `mastery produce`, curl); ``partner``,
    once known, is the one `mastery token` mints for."""
    DEV_ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
    values = {
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers,
        "REDIS_URL": stack.redis_url,
        "MASTERY_REDIS_CLUSTER": "1" if stack.redis_cluster else "0",
        "MASTERY_BROKER_PROFILE": "kafka",
        "MASTERY_TOPIC_PREFIX": stack.settings.topic_prefix,
        "MASTERY_TOPIC_PARTITIONS": str(stack.settings.topic_partitions),
        "MASTERY_JWT_HS256_SECRET": stack.jwt_secret,
        "API_URL": stack.api_url,  # for curl; not a setting
    }
    for i, port in enumerate(metrics_ports):
        values[f"WORKER_{i + 1}_METRICS_URL"] = _metrics_url(port)  # not settings
    if notifier_port is not None:
        values["NOTIFIER_METRICS_URL"] = _metrics_url(notifier_port)
    if partner is not None:
        values["MASTERY_TOKEN_PARTNER_ID"] = partner
    DEV_ENV_FILE.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    DEV_ENV_FILE.chmod(0o600)  # holds the run's JWT secret


def _scrape(ports: list[int]) -> dict[str, float]:
    """Every sample of the workers' metrics, summed over the workers, by name
    with labels (``name{label="v"}``) and by bare name (all its samples)."""
    totals: dict[str, float] = {}
    for port in ports:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/metrics", timeout=1
            ) as resp:
                text = resp.read().decode()
        except (OSError, urllib.error.URLError):
            continue
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            head, _, value = line.rpartition(" ")
            names = {head, head.split("{")[0]}
            for name in names:
                totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def _show_backlog(
    stack: DevStack, ports: list[int], total: int, *, deadline_s: float
) -> bool:
    """A progress bar of records applied until the workload is in (True)."""
    deadline = time.monotonic() + deadline_s
    done = 0.0
    while time.monotonic() < deadline:
        samples = _scrape(ports)
        handled = sum(
            samples.get(f'mastery_worker_events_total{{outcome="{o}"}}', 0.0)
            for o in ("applied", "duplicate", "redelivered", "rejected")
        )
        done = max(done, handled)
        width = 30
        filled = int(width * min(1.0, done / max(1, total)))
        print(
            f"\r  applying [{'#' * filled}{'.' * (width - filled)}] "
            f"{int(done):,}/{total:,} events",
            end="",
            flush=True,
        )
        if done >= total:
            print()
            return True
        if any(p.poll() not in (None, RESTART_EXIT_CODE) for p in stack.workers):
            print()
            if any(p.returncode == EXIT_BROKER_LOST for p in stack.workers):
                print(broker_loss_message(stack), file=sys.stderr)
            return False
        time.sleep(0.5)
    print()
    return False


def _show_rows(stack: DevStack, workload: Any, started: float) -> str:
    """Print a curl and the first page of the first learning instance; the
    partner that owns it."""
    from schemas.events import LearningInstanceCreated

    li = workload.learning_instances[0]
    goals = workload.goals_of(li)
    url = f"{stack.api_url}/learning-instances/{li}/metrics/status-and-progress"
    body = {"goal_ids": goals, "registrations_per_page": 2}
    partner: str = next(
        e.partner_id
        for e in workload.catalog
        if isinstance(e, LearningInstanceCreated) and e.learning_instance_id == li
    )
    token = stack.token(sub="demo-admin", partner_id=partner)
    page: object = None
    for _ in range(60):
        status, page = post_json(url, body, token=token)
        if status == 200 and isinstance(page, dict) and _has_work(page):
            break
        time.sleep(0.5)
    print(
        f"\nrows are live ({time.monotonic() - started:.1f} s after start). "
        f"API: {stack.api_url}\n"
    )
    print(f"dashboard: {stack.api_url}/dashboard#li={li}&goals={','.join(goals)}\n")
    print("try (with the TOKEN below):\n")
    print(
        f"curl -s -X POST {url} \\\n  -H 'Content-Type: application/json' \\\n"
        f'  -H "Authorization: Bearer $TOKEN" \\\n'
        f"  -d '{orjson.dumps(body).decode()}'\n"
    )
    print(orjson.dumps(page, option=orjson.OPT_INDENT_2).decode()[:3000] + "\n")
    return partner


def _has_work(page: dict[str, object]) -> bool:
    data = page.get("data")
    if not isinstance(data, list):
        return False
    return any(
        isinstance(row, dict)
        and any(
            item.get("status") != "no_work"
            for item in row.get("status_and_progress", [])
        )
        for row in data
    )
