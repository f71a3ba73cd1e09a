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

import orjson
from pydantic import SecretStr

from app.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from infra.settings import Settings
from infra.tokens import generate_secret, mint_token

__all__ = ["RESTART_EXIT_CODE", "DevStack", "run_dev"]

#: A worker exits with this code to be restarted (EX_TEMPFAIL).
RESTART_EXIT_CODE = 75


class DevStack:
    """Starts and stops the embedded servers and the worker/API processes."""

    def __init__(self, settings: Settings, *, log_dir: Path | None = None) -> None:
        self.settings = settings
        self.kafka = EmbeddedKafka()
        self.redis = EmbeddedRedis()
        self.api_port = settings.api_port if settings.api_port else free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="mastery-dev-"))
        self.log_dir = log_dir or self.workdir
        self.workers: list[subprocess.Popen[bytes]] = []
        self.api: subprocess.Popen[bytes] | None = None
        # The embedded stack's API authenticates like production, with a
        # random HS256 secret made for this run (`token()` mints tokens).
        self.jwt_secret = generate_secret()
        self._stopping = False
        self._retired: set[int] = set()  # terminated on purpose: not restarted

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
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.kafka.bootstrap_servers,
            REDIS_URL=self.redis.url,
            MASTERY_BROKER_PROFILE="tansu",
            MASTERY_TOPIC_PREFIX=self.settings.topic_prefix,
            MASTERY_TOPIC_PARTITIONS=str(self.settings.topic_partitions),
            MASTERY_LOG_LEVEL=self.settings.log_level,
            MASTERY_AUTH_MODE="jwt",
            MASTERY_JWT_HS256_SECRET=self.jwt_secret,
            # Children's logs go to files: unbuffered, so a killed process
            # leaves every line it wrote.
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def start_servers(self) -> None:
        """Start the broker and Redis, and create the topics (as production does
        before any producer runs: Tansu would auto-create them with its own
        partition count on a producer's first metadata request)."""
        from infra.broker import ensure_topics

        self.kafka.start()
        self.redis.start()
        asyncio.run(ensure_topics(self.settings, self.kafka.bootstrap_servers))

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
        """Restart a worker that asks for it (exit code 75: stalled, see the
        worker's watchdog), as a production supervisor would."""
        code = proc.wait()
        if (
            code == RESTART_EXIT_CODE
            and not self._stopping
            and proc.pid not in self._retired
        ):
            self.start_worker(name)

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

    def stop(self) -> None:
        self._stopping = True
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            self._terminate(proc)
        self.workers.clear()
        self.api = None
        self.redis.stop()
        self.kafka.stop()
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


def run_dev(
    settings: Settings,
    *,
    workload: object,
    exit_after: float | None,
    workers: int = 1,
) -> int:
    """``mastery dev``: start everything, stream the workload, print a curl."""
    from app.cli import _produce
    from app.workload import Workload
    from schemas.events import LearningInstanceCreated

    assert isinstance(workload, Workload)
    stack = DevStack(settings)
    started = time.monotonic()
    try:
        print("starting the embedded Tansu broker and valkey server ...", flush=True)
        stack.start_servers()
        print(
            f"  broker  {stack.kafka.bootstrap_servers}\n  redis   {stack.redis.url}",
            flush=True,
        )
        print(f"starting {workers} worker(s) and the API ...", flush=True)
        for i in range(workers):
            stack.start_worker(f"worker-{i + 1}")
        stack.start_api()
        print(
            f"streaming {len(workload.catalog)} catalog events, "
            f"{len(workload.registrations)} registrations, "
            f"{len(workload.attempts):,} attempts ...",
            flush=True,
        )
        asyncio.run(_produce(settings, stack.kafka.bootstrap_servers, workload))
        li = workload.learning_instances[0]
        goals = workload.goals_of(li)
        url = f"{stack.api_url}/learning-instances/{li}/metrics/status-and-progress"
        body = {"goal_ids": goals, "registrations_per_page": 2}
        partner = next(
            e.partner_id
            for e in workload.catalog
            if isinstance(e, LearningInstanceCreated)
        )
        token = stack.token(sub="demo-admin", partner_id=partner)
        print("waiting for the worker to project rows ...", flush=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status, page = post_json(url, body, token=token)
            if status == 200 and isinstance(page, dict) and _has_work(page):
                break
            time.sleep(0.5)
        else:
            print(
                "no rows after 120 s; see the worker log in",
                stack.log_dir,
                file=sys.stderr,
            )
            return 1
        print(
            f"\nrows are live ({time.monotonic() - started:.1f} s after start). "
            f"API: {stack.api_url}\n"
        )
        print(
            f"a partner-admin token for {partner!r}, valid 24 h "
            "(`mastery token` mints more):\n"
        )
        print(f"export TOKEN={token}\n")
        print("try:\n")
        print(
            f"curl -s -X POST {url} \\\n  -H 'Content-Type: application/json' \\\n"
            f'  -H "Authorization: Bearer $TOKEN" \\\n'
            f"  -d '{orjson.dumps(body).decode()}'\n"
        )
        print(orjson.dumps(page, option=orjson.OPT_INDENT_2).decode()[:3000])
        print("\nCtrl-C stops everything.", flush=True)
        end = None if exit_after is None else time.monotonic() + exit_after
        while end is None or time.monotonic() < end:
            for proc in [*stack.workers, stack.api]:
                restarted = proc is not None and proc.returncode == RESTART_EXIT_CODE
                if proc is not None and proc.poll() is not None and not restarted:
                    print(
                        f"a child process exited ({proc.args!r}); stopping",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        stack.stop()


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
