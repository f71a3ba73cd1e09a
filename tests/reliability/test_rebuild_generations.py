"""``mastery rebuild --flush`` never leaves Redis emptier than it found it
(issue 10, point 8; docs/read-model.md, "Rebuilding"): it runs the broker
self-check, builds a new generation beside the live one and switches only
when that one is complete. Real broker, Redis, worker, API and CLI processes."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request

import pytest
from redis import Redis

from app.devstack.stack import DevStack, post_json
from app.devstack.workload import Workload, simulated
from infra.read_model import ReadModelKeys
from tests.integration.helpers import partner_of, produce, wait_until_rows_match
from tests.reliability.readmodel import dump_read_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = ReadModelKeys()


def _rebuild(stack: DevStack, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "rebuild", "--flush"],
        env=stack.env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _generation_keys(redis: Redis) -> list[str]:
    """Keys of generations other than 0 (``ms:g<n>:…``)."""
    return [
        k.decode()
        for k in redis.scan_iter(match="ms:g*")
        if re.match(r"ms:g[0-9]+:", k.decode())
    ]


def _page(stack: DevStack, workload: Workload) -> tuple[int, object]:
    li = workload.learning_instances[0]
    return post_json(
        f"{stack.api_url}/learning-instances/{li}/metrics/status-and-progress",
        {"goal_ids": workload.goals_of(li)},
        token=stack.token(partner_id=partner_of(workload, li)),
    )


def test_rebuild_flush_refuses_to_shrink_and_otherwise_switches_generation(
    stack: DevStack,
) -> None:
    workload = simulated(
        learning_instances=2, learners_per_instance=10, attempts_per_learner=15, seed=44
    )
    events = [*workload.registrations, *workload.attempts]
    produce(stack, [*workload.catalog, *events])
    stack.start_worker()
    wait_until_rows_match(stack, workload, events)
    redis = Redis.from_url(stack.redis.url)
    before = dump_read_model(stack.redis.url)
    marker = redis.get(KEYS.materialized())
    status, page = _page(stack, workload)
    assert status == 200 and len(before) > 50

    # A broker that misreports end offsets is refused before Redis is touched
    # (tests/unit/test_broker_check.py); Apache Kafka passes the self-check.
    # 1. Topics that hold less than Redis (here: another worker's changelog,
    # which is empty): the new generation is built, found smaller, discarded.
    done = _rebuild(stack, MASTERY_APP_ID=f"{stack.settings.worker_id}-other")
    assert done.returncode != 0, done.stdout
    assert "would hold less than the live one" in done.stderr
    assert "0 registrations instead of" in done.stderr
    assert dump_read_model(stack.redis.url) == before
    assert redis.get(KEYS.materialized()) == marker
    assert redis.get(KEYS.current_generation()) is None
    assert _generation_keys(redis) == []  # the discarded one is deleted

    # 2. Complete topics: a new generation with the same content, switched to
    # in one step; the old generation's keys are deleted; the API serves the
    # same page from the new generation.
    done = _rebuild(stack)
    assert done.returncode == 0, done.stderr
    generation = int(redis.get(KEYS.current_generation()) or 0)
    assert generation >= 1
    assert f"(generation {generation}," in done.stdout
    assert dump_read_model(stack.redis.url, generation) == before
    assert dump_read_model(stack.redis.url, 0) == {}
    new_marker = redis.get(KEYS.in_generation(generation).materialized())
    # The rebuild marks it; the running worker follows the switch within a
    # second, repairs its part and marks it again (app/worker/repairer.py,
    # Repairer.watch_read_model): either may be the last writer by now.
    assert new_marker is not None
    assert (
        b'"by":"mastery rebuild"' in new_marker
        or f'"by":"worker {stack.settings.worker_id}"'.encode() in new_marker
    ), new_marker
    assert _page(stack, workload) == (status, page)
    with urllib.request.urlopen(f"{stack.api_url}/readyz", timeout=5) as r:
        assert r.status == 200
