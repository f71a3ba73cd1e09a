"""The broker restarted empty (on lost disks): the worker stops with code 65 and says
why, the API's /readyz and ingest answer 503; an ordinary restart is not a
loss (docs/operations.md, "The broker restarted empty"). Real processes."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from redis import Redis

from app.devstack.embedded import EmbeddedKafka
from app.devstack.stack import DevStack
from app.devstack.workload import Workload, simulated
from app.worker.faust_corrections.exit_policy import EXIT_BROKER_LOST
from infra.broker import create_topics
from infra.read_model import ReadModelKeys
from schemas.events import AttemptGraded, RegistrationCreated
from tests.integration.helpers import partner_of, produce, wait_until_rows_match
from tests.waiting import holds_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.own_broker]

KEYS = ReadModelKeys()
#: A short heartbeat, so a stopped worker shows in /readyz within seconds.
WORKER_ENV = {
    "MASTERY_WORKER_HEARTBEAT_TTL_S": "2",
    "MASTERY_BROKER_CHECK_INTERVAL_S": "1",
}


def _readyz(stack: DevStack) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{stack.api_url}/readyz", timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def _register(
    stack: DevStack, workload: Workload, user: str
) -> tuple[int, dict[str, str], Any]:
    """POST /registrations for a new learner; (status, headers, body)."""
    li = workload.learning_instances[0]
    token = stack.token(partner_id=partner_of(workload, li))
    request = urllib.request.Request(
        f"{stack.api_url}/registrations",
        data=orjson.dumps(
            {"learning_instance_id": li, "user_id": user, "role": "learner"}
        ),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            status, headers, body = r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        status, headers, body = exc.code, exc.headers, exc.read()
    return status, {k.lower(): v for k, v in headers.items()}, orjson.loads(body)


def _running_world(
    stack: DevStack, seed: int
) -> tuple[Workload, subprocess.Popen[bytes]]:
    workload = simulated(
        learning_instances=1, learners_per_instance=5, attempts_per_learner=4, seed=seed
    )
    events: list[RegistrationCreated | AttemptGraded] = [
        *workload.registrations,
        *workload.attempts,
    ]
    produce(stack, [*workload.catalog, *events])
    worker = stack.start_worker(extra_env=WORKER_ENV)
    wait_until_rows_match(stack, workload, events)
    return workload, worker


def _wait_ready(stack: DevStack, timeout_s: float = 20.0) -> dict[str, Any]:
    _, body = wait_for(
        lambda: _readyz(stack),
        accept=lambda answer: answer[0] == 200,
        timeout_s=timeout_s,
        interval_s=0.5,
        what="the API's /readyz to answer 200",
    )
    return body


def _worker_log(stack: DevStack) -> str:
    return Path(stack.log_dir, "worker-1.log").read_text(errors="replace")


def _assert_loss_reported(stack: DevStack, workload: Workload) -> None:
    """/readyz and ingest say 503, with the reason, while the loss stands."""
    status, body = _readyz(stack)
    assert status == 503, body
    details = body["error"]["details"]
    assert "broker_log" in details["failing"]
    reason = details["checks"]["broker_log"]
    assert "lost records" in reason and "mastery broker-reset" in reason
    assert f"{stack.settings.topic_prefix}.registration-events.v1[" in reason

    status, headers, error = _register(stack, workload, "late-learner")
    assert status == 503, error
    assert error["error"]["code"] == "broker_lost_data"
    assert error["error"]["details"]["stored"] == []
    assert "lost records" in error["error"]["details"]["reason"]
    assert headers.get("retry-after") == "5"


def test_a_running_worker_stops_with_65_and_the_api_refuses_ingest(
    stack: DevStack,
) -> None:
    workload, worker = _running_world(stack, seed=61)
    assert _wait_ready(stack)["checks"]["broker_log"] == "ok"

    stack.kafka.restart(lose_data=True)  # same port, empty disks
    assert worker.wait(timeout=40) == EXIT_BROKER_LOST
    log = _worker_log(stack)
    assert "BROKER LOST DATA" in log
    assert "registration-events.v1[" in log
    assert 'docs/operations.md, "The broker restarted empty"' in log
    _assert_loss_reported(stack, workload)
    # The supervisor decides as the worker exits; nothing marks a restart
    # that did not happen, so watch for one for a second.
    holds_for(
        lambda: len(stack.workers) == 1,
        window_s=1.0,
        what="no restart of a worker that found a loss",
    )

    # Another worker refuses to start while the loss stands ...
    again = stack.start_worker(extra_env=WORKER_ENV)
    assert again.wait(timeout=40) == EXIT_BROKER_LOST
    assert "reported earlier and not cleared" in _worker_log(stack)

    # ... until the operator accepts the broker's log (runbook).
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "broker-reset"],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "cleared: the broker lost records" in done.stdout
    assert Redis.from_url(stack.redis.url).get(KEYS.broker_loss()) is None
    status, _, accepted = _register(stack, workload, "after-reset")
    assert status == 202, accepted


def test_a_worker_started_on_an_emptied_broker_stops_with_65(stack: DevStack) -> None:
    workload, worker = _running_world(stack, seed=62)
    stack.stop_worker(worker)
    # Readiness shows that no worker runs (here: within its 2 s heartbeat).
    status, body = wait_for(
        lambda: _readyz(stack),
        accept=lambda answer: answer[0] != 200,
        timeout_s=10,
        interval_s=0.5,
        what="/readyz to stop answering 200 once no worker runs",
    )
    assert status == 503
    assert body["error"]["details"]["failing"] == ["worker"]
    assert "no worker heartbeat" in body["error"]["details"]["checks"]["worker"]

    stack.kafka.restart(lose_data=True)
    started = stack.start_worker(extra_env=WORKER_ENV)
    assert started.wait(timeout=40) == EXIT_BROKER_LOST
    log = _worker_log(stack)
    assert "BROKER LOST DATA" in log and "now 0" in log
    _assert_loss_reported(stack, workload)


def test_an_ordinary_restart_is_not_a_loss(stack: DevStack) -> None:
    workload, worker = _running_world(stack, seed=63)
    seen = Redis.from_url(stack.redis.url).hgetall(KEYS.broker_offsets())
    assert len(seen) >= 4 + 1  # every registration-events partition, the catalog
    stack.stop_worker(worker)
    extra = [
        AttemptGraded.model_validate(
            a.model_dump() | {"attempt_id": f"{a.attempt_id}-2"}
        )
        for a in workload.attempts[:10]
    ]
    produce(stack, extra)
    restarted = stack.start_worker(extra_env=WORKER_ENV)
    wait_until_rows_match(
        stack, workload, [*workload.registrations, *workload.attempts, *extra]
    )
    assert restarted.poll() is None
    assert Redis.from_url(stack.redis.url).get(KEYS.broker_loss()) is None
    body = _wait_ready(stack)
    assert body["checks"]["broker_log"] == "ok" and body["checks"]["worker"] == "ok"
    status, _, accepted = _register(stack, workload, "ordinary")
    assert status == 202, accepted


def _broker_pid(port: int) -> int:
    """The pid of the Apache Kafka JVM listening on ``port`` (a grandchild)."""
    wanted = f"PLAINTEXT://127.0.0.1:{port},"
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        argv = text.rstrip("\0").split("\0")
        if "kafka.Kafka" in argv and argv[-1].endswith("server.properties"):
            try:
                config = Path(argv[-1]).read_text()
            except OSError:
                continue
            if wanted in config:
                return int(cmdline.parent.name)
    raise AssertionError(f"no Apache Kafka process listens on {port}")


def _wait_until_dead(pid: int) -> None:
    """Until ``pid`` is gone or a zombie (not our child: we cannot wait())."""
    stat = Path(f"/proc/{pid}/stat")

    def state() -> str:
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return "gone"

    wait_for(
        state,
        accept=lambda s: s in ("Z", "X", "gone"),
        timeout_s=10,
        interval_s=0.02,
        what=f"process {pid} to end after SIGKILL (its state)",
    )


DEV_ARGS = ["--workers", "1", "--instances", "1", "--learners", "3"]
DEV_ARGS += ["--exit-after", "120"]


def test_mastery_dev_says_why_and_does_not_restart_the_worker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTERY_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("REDIS_URL", None)
    env.update(WORKER_ENV)
    out = tmp_path / "dev.out"
    with out.open("w") as sink:
        dev = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "dev", *DEV_ARGS],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def output() -> str:
        text = out.read_text()
        ready = "Ctrl-C stops everything." in text
        assert ready or dev.poll() is None, text
        return text

    broker: EmbeddedKafka | None = None
    try:
        wait_for(
            output,
            accept=lambda text: "Ctrl-C stops everything." in text,
            timeout_s=120,
            interval_s=0.5,
            what="`mastery dev` to say that Ctrl-C stops everything",
        )
        values = dict(
            line.split("=", 1)
            for line in (tmp_path / "var" / "dev.env").read_text().splitlines()
        )
        port = int(values["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
        # The worker's broker check (every 1 s here) has recorded end offsets
        # that the emptied broker will not reach.
        redis = Redis.from_url(values["REDIS_URL"])
        wait_for(
            lambda: {
                field: end
                for field, end in redis.hgetall(KEYS.broker_offsets()).items()
                if int(end) > 0
            },
            timeout_s=30,
            interval_s=0.2,
            what="recorded end offsets above 0",
        )
        redis.close()
        pid = _broker_pid(port)
        os.kill(pid, signal.SIGKILL)
        _wait_until_dead(pid)  # its port is free again
        broker = EmbeddedKafka(port=port).start()  # empty, same port

        assert dev.wait(timeout=60) == 1, out.read_text()[-3000:]
        text = out.read_text()
        assert f"a worker stopped (exit code {EXIT_BROKER_LOST})" in text, text[-3000:]
        # The broker watch or Faust's table recovery (ConsistencyError) may
        # notice first; both report a loss of records (app/worker/broker_watch.py).
        assert "the broker lost records" in text
        assert "start `mastery dev` again" in text
        kept = re.search(r"logs kept in (\S+)", text)
        assert kept is not None
        shutil.rmtree(kept.group(1), ignore_errors=True)
    finally:
        if dev.poll() is None:
            dev.terminate()
            dev.wait(timeout=60)
        if broker is not None:
            broker.stop()


def test_faust_consistency_error_ends_in_the_same_report(stack: DevStack) -> None:
    """Redis lost its record too (FLUSHALL), so only the worker's local store
    knows: its changelog offsets are beyond the new changelog's end. Faust's
    ConsistencyError (formerly exit 1) becomes the reported loss, code 65."""
    workload = simulated(
        learning_instances=1, learners_per_instance=30, attempts_per_learner=4, seed=64
    )
    events: list[RegistrationCreated | AttemptGraded] = [
        *workload.registrations,
        *workload.attempts,
    ]
    produce(stack, [*workload.catalog, *events])
    worker = stack.start_worker(extra_env=WORKER_ENV)
    wait_until_rows_match(stack, workload, events)
    stack.stop_worker(worker)
    changelog = f"{stack.settings.worker_id}-registration-state-changelog"

    stack.kafka.restart(lose_data=True)  # Apache Kafka keeps its disks otherwise
    Redis.from_url(stack.redis.url).flushall()

    async def two_records_per_changelog_partition() -> None:
        # As declared (infra/topic_specs.py): the worker refuses anything else.
        spec = NewTopic(changelog, 4, 1, topic_configs={"cleanup.policy": "compact"})
        await create_topics(stack.kafka.bootstrap_servers, [spec])
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap_servers)
        await producer.start()
        try:
            for partition in range(4):
                for i in range(2):
                    await producer.send_and_wait(
                        changelog, b"x", key=b"k%d" % i, partition=partition
                    )
        finally:
            await producer.stop()

    asyncio.run(two_records_per_changelog_partition())
    started = stack.start_worker(extra_env=WORKER_ENV)
    assert started.wait(timeout=60) == EXIT_BROKER_LOST
    log = _worker_log(stack)
    assert "the local store has read further than the changelog" in log
    assert "is higher than the last offset in that topic" in log  # Faust's words
    assert f"delete {stack.workdir / 'worker-1'}" in log
    assert "Crashed reason=" not in log  # not mode's crash (exit 1)
    loss = Redis.from_url(stack.redis.url).get(KEYS.broker_loss())
    assert loss is not None and b"local store" in loss
