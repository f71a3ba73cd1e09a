"""The usual mistakes against real (or absent) servers end in one line naming
the setting to fix, not a traceback; ``mastery rebuild`` marks the read model
materialized (what the API's /readyz requires)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from redis import Redis

from app.cli.main import REDIS_START_BACKOFF_S, main
from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from infra.read_model import ReadModelKeys
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

MASTERY = str(Path(sys.executable).with_name("mastery"))


def _mastery(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MASTERY, *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_unreachable_broker_is_one_line() -> None:
    dead = f"127.0.0.1:{free_port()}"
    done = _mastery("selfcheck", KAFKA_BOOTSTRAP_SERVERS=dead)
    assert done.returncode == 69, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[0]] and "Traceback" not in done.stderr
    assert lines[0].startswith(f"error: cannot reach the Kafka broker at {dead}")
    assert "check KAFKA_BOOTSTRAP_SERVERS" in lines[0]


def _with_dead_redis(
    command: str, kafka: EmbeddedKafka, prefix: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """``mastery command`` on the session's broker, with a REDIS_URL (and a
    password) where nothing listens."""
    return _mastery(
        command,
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        REDIS_URL=f"redis://:hunter2@127.0.0.1:{free_port()}/0",
        MASTERY_BROKER_PROFILE="kafka",
        MASTERY_TOPIC_PREFIX=prefix,
        **env,
    )


def test_unreachable_redis_is_one_line(kafka_server: EmbeddedKafka) -> None:
    done = _with_dead_redis("rebuild", kafka_server, "cli-dead-redis")
    assert done.returncode == 69, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # after the progress bars
    assert "Traceback" not in done.stderr
    assert last.startswith("error: cannot reach Redis at redis://:***@127.0.0.1:")
    assert last.endswith("check REDIS_URL")
    assert "hunter2" not in done.stderr


def test_a_worker_whose_redis_is_unreachable_says_so_in_one_line(
    kafka_server: EmbeddedKafka, tmp_path: Path
) -> None:
    """Not Faust's crash (150 lines, two tracebacks, an exit a supervisor
    reads as "restart me"): one line and 69, after a few seconds' wait."""
    started = time.monotonic()
    done = _with_dead_redis(
        "worker",
        kafka_server,
        "cli-worker-dead-redis",
        MASTERY_DATA_DIR=str(tmp_path),
    )
    took = time.monotonic() - started
    assert done.returncode == 69, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: cannot reach Redis at redis://:***@127.0.0.1:")
    assert lines[0].endswith("check REDIS_URL") and "hunter2" not in done.stderr
    assert took >= sum(REDIS_START_BACKOFF_S), took  # it waited before giving up


def test_rebuild_marks_the_read_model_materialized(
    kafka_server: EmbeddedKafka,
    redis_server: EmbeddedRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = ReadModelKeys().materialized()
    redis = Redis.from_url(redis_server.url)
    redis.delete(marker)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_server.bootstrap_servers)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("MASTERY_BROKER_PROFILE", "kafka")
    monkeypatch.setenv("MASTERY_TOPIC_PREFIX", "cli-marker")
    assert main(["rebuild"]) == 0
    value = redis.get(marker)
    assert value is not None and b'"by":"mastery rebuild"' in value


def test_api_process_serves_the_operator_endpoints_and_logs_json(
    redis_server: EmbeddedRedis,
) -> None:
    """`mastery api` as deployed: socket bound by the CLI, uvicorn's loggers
    going through infra.logs (every stderr line is JSON)."""
    port = free_port()
    Redis.from_url(redis_server.url).set(ReadModelKeys().materialized(), b"{}")
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "MASTERY_AUTH_MODE": "none",
        "MASTERY_LOG_FORMAT": "json",
        "MASTERY_LOG_LEVEL": "DEBUG",
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    proc = subprocess.Popen(
        [MASTERY, "api", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            return False
        return True

    try:
        wait_for(healthy, timeout_s=30, interval_s=0.1, what="the API to start")
        ready = orjson.loads(urllib.request.urlopen(f"{base}/readyz").read())
        assert ready == {
            "status": "ready",
            "checks": {"redis": "ok", "read_model": "ok"},
        }
        page = urllib.request.urlopen(f"{base}/docs").read()
        assert b"swagger-ui-bundle.js" in page
        metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
        assert (
            'mastery_api_requests_total{method="GET",route="/healthz",status="200"}'
            in metrics
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "DEBUG logging produced no line at all"
    for line in lines:
        entry = orjson.loads(line)  # every line is one JSON object
        assert {"timestamp", "level", "logger", "message"} <= set(entry)
