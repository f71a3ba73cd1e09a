"""Losing the read model: FLUSHALL, rebuild, Redis down and back."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from redis import Redis

from app.devstack.stack import DevStack, post_json
from app.devstack.workload import simulated
from infra.read_model import ReadModelKeys
from infra.topic_names import TopicNames
from tests.integration.helpers import (
    group_behind,
    partner_of,
    produce,
    wait_until_committed,
    wait_until_rows_match,
)
from tests.reliability.readmodel import dump_read_model
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _rebuild(stack: DevStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "rebuild", *args],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_flushall_then_rebuild_restores_identical_keys(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=2, learners_per_instance=20, attempts_per_learner=30, seed=41
    )
    events = [*workload.registrations, *workload.attempts]
    produce(stack, [*workload.catalog, *events])
    worker = stack.start_worker()
    wait_until_rows_match(stack, workload, events)
    before = dump_read_model(stack.redis.url)
    assert len(before) > 100
    # Stopped: a running worker would repair the flush itself (next test).
    stack.stop_worker(worker)

    Redis.from_url(stack.redis.url).flushall()
    assert dump_read_model(stack.redis.url) == {}
    done = _rebuild(stack)
    assert "rebuilt the read model" in done.stdout
    assert "100.0%" in done.stderr  # the progress bar ran to the end
    assert dump_read_model(stack.redis.url) == before
    # ... and says so, for the API's /readyz (docs/operations.md)
    marker = Redis.from_url(stack.redis.url).get(ReadModelKeys().materialized())
    assert marker is not None and b'"by":"mastery rebuild"' in marker


def test_worker_repairs_a_flushed_redis_on_restart(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=15, attempts_per_learner=20, seed=42
    )
    events = [*workload.registrations, *workload.attempts]
    produce(stack, [*workload.catalog, *events])
    worker = stack.start_worker()
    wait_until_rows_match(stack, workload, events)
    before = dump_read_model(stack.redis.url)
    Redis.from_url(stack.redis.url).flushall()
    stack.stop_worker(worker)
    stack.start_worker()
    wait_for(
        lambda: dump_read_model(stack.redis.url) == before,
        timeout_s=90,
        interval_s=1,
        what="the restarted worker to repair the flushed read model as it was",
    )


def test_api_answers_503_while_redis_is_down_and_recovers(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=5, attempts_per_learner=10, seed=43
    )
    events = [*workload.registrations, *workload.attempts]
    produce(stack, [*workload.catalog, *events])
    stack.start_worker()
    wait_until_rows_match(stack, workload, events)
    li = workload.learning_instances[0]
    url = f"{stack.api_url}/learning-instances/{li}/metrics/status-and-progress"
    body = {"goal_ids": workload.goals_of(li)}
    token = stack.token(partner_id=partner_of(workload, li))

    assert stack.redis.proc is not None
    stack.redis.proc.terminate()
    stack.redis.proc.wait(timeout=10)
    status, error = post_json(url, body, token=token)
    assert status == 503
    assert isinstance(error, dict)
    assert error["error"]["code"] == "read_model_unavailable"

    # More attempts while Redis is down: the worker holds them, nothing lost.
    more = simulated(
        learning_instances=1, learners_per_instance=5, attempts_per_learner=10, seed=43
    )
    extra = [
        a.model_copy(update={"attempt_id": f"{a.attempt_id}-2"})
        for a in more.attempts[:20]
    ]
    log = stack.log_dir / "worker-1.log"
    retries = log.read_text(errors="replace").count("Redis unavailable")
    produce(stack, extra)
    # The worker has taken them in: its projector retries their write.
    wait_for(
        lambda: log.read_text(errors="replace").count("Redis unavailable") > retries,
        timeout_s=30,
        interval_s=0.2,
        what="the worker to retry writing the extra attempts to Redis",
    )

    stack.redis.restart()  # memory only: it comes back empty
    _rebuild(stack)
    status, _ = post_json(url, body, token=token)
    assert status == 200
    wait_until_rows_match(stack, workload, [*events, *extra])


def test_a_running_worker_derives_its_rows_again_after_an_in_place_rebuild(
    stack: DevStack,
) -> None:
    """``mastery rebuild`` reads the changelog, which is behind a worker's
    batches until its next checkpoint: the rows it writes are older than the
    worker's, and the worker derives its part again once the rebuild is done
    (``ms:meta:{ms}:rebuilds``, docs/read-model.md, "Rebuilding")."""
    workload = simulated(
        learning_instances=1, learners_per_instance=8, attempts_per_learner=16, seed=47
    )
    half = len(workload.attempts) // 2
    first = [*workload.registrations, *workload.attempts[:half]]
    produce(stack, [*workload.catalog, *first])
    worker = stack.start_worker()
    wait_until_rows_match(stack, workload, first)
    wait_until_committed(stack)  # the changelog holds the first half
    stack.stop_worker(worker)
    # The same worker again (its RocksDB store), checkpointing once a minute:
    # the second half stays out of the changelog for the rest of the test.
    stack.start_worker(extra_env={"MASTERY_COMMIT_INTERVAL_S": "60"})
    everything = [*first, *workload.attempts[half:]]
    produce(stack, workload.attempts[half:])
    wait_until_rows_match(stack, workload, everything)
    topic = TopicNames(stack.settings.topic_prefix).registration_events
    behind = group_behind(
        stack.kafka.bootstrap_servers, stack.settings.worker_id, topic
    )
    assert any(behind.values()), f"a checkpoint ran already: {behind}"

    done = _rebuild(stack)  # the rows of the first half
    assert "rows" in done.stdout, done.stdout
    wait_until_rows_match(stack, workload, everything, timeout_s=30)


def test_a_running_worker_repairs_a_flushed_redis_and_the_api_says_503_meanwhile(
    stack: DevStack,
) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=15, attempts_per_learner=20, seed=43
    )
    events = [*workload.registrations, *workload.attempts]
    produce(stack, [*workload.catalog, *events])
    worker = stack.start_worker()
    wait_until_rows_match(stack, workload, events)
    before = dump_read_model(stack.redis.url)
    li = workload.learning_instances[0]
    url = f"{stack.api_url}/learning-instances/{li}/metrics/status-and-progress"
    token = stack.token(partner_id=partner_of(workload, li))
    body = {"goal_ids": workload.goals_of(li)}

    Redis.from_url(stack.redis.url).flushall()  # as a Redis restarted empty
    status, page = post_json(url, body, token=token)
    assert status == 503, page  # not a false 404
    assert page["error"]["code"] == "read_model_repairing"
    began = time.monotonic()
    wait_for(
        lambda: dump_read_model(stack.redis.url) == before,
        timeout_s=20,
        interval_s=0.2,
        what="the running worker to repair the flushed read model as it was",
    )
    repaired_in = time.monotonic() - began
    assert worker.poll() is None and len(stack.workers) == 1  # no restart
    assert post_json(url, body, token=token)[0] == 200
    assert repaired_in < 10, repaired_in


def test_a_running_worker_follows_a_rebuild_into_its_new_generation(
    stack: DevStack,
) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=12, attempts_per_learner=30, seed=44
    )
    half = len(workload.attempts) // 2
    produce(stack, [*workload.catalog, *workload.registrations])
    produce(stack, workload.attempts[:half])
    stack.start_worker()
    wait_until_rows_match(
        stack, workload, [*workload.registrations, *workload.attempts[:half]]
    )
    _rebuild(stack, "--flush")
    keys = ReadModelKeys()
    redis = Redis.from_url(stack.redis.url)
    generation = int(redis.get(keys.current_generation()) or 0)
    assert generation >= 1
    produce(stack, workload.attempts[half:])  # rows the worker writes from now on
    wait_until_rows_match(
        stack, workload, [*workload.registrations, *workload.attempts]
    )
    # ... into the generation the API reads, and it marks that one whole
    assert redis.get(keys.in_generation(generation).materialized()) is not None
