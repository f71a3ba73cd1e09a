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

from app.devstack import DevStack, post_json
from app.workload import Workload, simulated
from schemas.read_model import ReadModelKeys
from tests.integration.helpers import partner_of, produce, wait_until_rows_match
from tests.reliability.readmodel import dump_read_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = ReadModelKeys()


def _rebuild(stack: DevStack, **env: str) -> subprocess.CompletedProcess[str]:
 second, repairs its part and marks it again (app/worker.py,return subprocess.run(
 second, repairs its part and marks it again (app/worker.py,    [sys.executable, "-m", "app.cli", "rebuild", "--flush"],
 second, repairs its part and marks it again (app/worker.py,    env=stack.env(**env),
 second, repairs its part and marks it again (app/worker.py,    capture_output=True,
 second, repairs its part and marks it again (app/worker.py,    text=True,
 second, repairs its part and marks it again (app/worker.py,    timeout=120,
 second, repairs its part and marks it again (app/worker.py,    check=False,
 second, repairs its part and marks it again (app/worker.py,)


def _generation_keys(redis: Redis) -> list[str]:
 second, repairs its part and marks it again (app/worker.py,"""Keys of generations other than 0 (``ms:g<n>:…``)."""
 second, repairs its part and marks it again (app/worker.py,return [
 second, repairs its part and marks it again (app/worker.py,    k.decode()
 second, repairs its part and marks it again (app/worker.py,    for k in redis.scan_iter(match="ms:g*")
 second, repairs its part and marks it again (app/worker.py,    if re.match(r"ms:g[0-9]+:", k.decode())
 second, repairs its part and marks it again (app/worker.py,]


def _page(stack: DevStack, workload: Workload) -> tuple[int, object]:
 second, repairs its part and marks it again (app/worker.py,li = workload.learning_instances[0]
 second, repairs its part and marks it again (app/worker.py,return post_json(
 second, repairs its part and marks it again (app/worker.py,    f"{stack.api_url}/learning-instances/{li}/metrics/status-and-progress",
 second, repairs its part and marks it again (app/worker.py,    {"goal_ids": workload.goals_of(li)},
 second, repairs its part and marks it again (app/worker.py,    token=stack.token(partner_id=partner_of(workload, li)),
 second, repairs its part and marks it again (app/worker.py,)


def test_rebuild_flush_refuses_to_shrink_and_otherwise_switches_generation(
 second, repairs its part and marks it again (app/worker.py,stack: DevStack,
) -> None:
 second, repairs its part and marks it again (app/worker.py,workload = simulated(
 second, repairs its part and marks it again (app/worker.py,    learning_instances=2, learners_per_instance=10, attempts_per_learner=15, seed=44
 second, repairs its part and marks it again (app/worker.py,)
 second, repairs its part and marks it again (app/worker.py,events = [*workload.registrations, *workload.attempts]
 second, repairs its part and marks it again (app/worker.py,produce(stack, [*workload.catalog, *events])
 second, repairs its part and marks it again (app/worker.py,stack.start_worker()
 second, repairs its part and marks it again (app/worker.py,wait_until_rows_match(stack, workload, events)
 second, repairs its part and marks it again (app/worker.py,redis = Redis.from_url(stack.redis.url)
 second, repairs its part and marks it again (app/worker.py,before = dump_read_model(stack.redis.url)
 second, repairs its part and marks it again (app/worker.py,marker = redis.get(KEYS.materialized())
 second, repairs its part and marks it again (app/worker.py,status, page = _page(stack, workload)
 second, repairs its part and marks it again (app/worker.py,assert status == 200 and len(before) > 50

 second, repairs its part and marks it again (app/worker.py,# A broker that misreports end offsets is refused before Redis is touched
 second, repairs its part and marks it again (app/worker.py,# (tests/unit/test_broker_check.py); Apache Kafka passes the self-check.
 second, repairs its part and marks it again (app/worker.py,# 1. Topics that hold less than Redis (here: another worker's changelog,
 second, repairs its part and marks it again (app/worker.py,# which is empty): the new generation is built, found smaller, discarded.
 second, repairs its part and marks it again (app/worker.py,done = _rebuild(stack, MASTERY_APP_ID=f"{stack.settings.worker_id}-other")
 second, repairs its part and marks it again (app/worker.py,assert done.returncode != 0, done.stdout
 second, repairs its part and marks it again (app/worker.py,assert "would hold less than the live one" in done.stderr
 second, repairs its part and marks it again (app/worker.py,assert "0 registrations instead of" in done.stderr
 second, repairs its part and marks it again (app/worker.py,assert dump_read_model(stack.redis.url) == before
 second, repairs its part and marks it again (app/worker.py,assert redis.get(KEYS.materialized()) == marker
 second, repairs its part and marks it again (app/worker.py,assert redis.get(KEYS.current_generation()) is None
 second, repairs its part and marks it again (app/worker.py,assert _generation_keys(redis) == []  # the discarded one is deleted

 second, repairs its part and marks it again (app/worker.py,# 2. Complete topics: a new generation with the same content, switched to
 second, repairs its part and marks it again (app/worker.py,# in one step; the old generation's keys are deleted; the API serves the
 second, repairs its part and marks it again (app/worker.py,# same page from the new generation.
 second, repairs its part and marks it again (app/worker.py,done = _rebuild(stack)
 second, repairs its part and marks it again (app/worker.py,assert done.returncode == 0, done.stderr
 second, repairs its part and marks it again (app/worker.py,generation = int(redis.get(KEYS.current_generation()) or 0)
 second, repairs its part and marks it again (app/worker.py,assert generation >= 1
 second, repairs its part and marks it again (app/worker.py,assert f"(generation {generation}," in done.stdout
 second, repairs its part and marks it again (app/worker.py,assert dump_read_model(stack.redis.url, generation) == before
 second, repairs its part and marks it again (app/worker.py,assert dump_read_model(stack.redis.url, 0) == {}
 second, repairs its part and marks it again (app/worker.py,new_marker = redis.get(KEYS.in_generation(generation).materialized())
 second, repairs its part and marks it again (app/worker.py,# The rebuild marks it; the running worker follows the switch within a
 second, repairs its part and marks it again (app/worker.py,# second, repairs its part and marks it again (app/worker.py,
 second, repairs its part and marks it again (app/worker.py,# _run_read_model_watch): either may be the last writer by now.
 second, repairs its part and marks it again (app/worker.py,assert new_marker is not None
 second, repairs its part and marks it again (app/worker.py,assert (
 second, repairs its part and marks it again (app/worker.py,    b'"by":"mastery rebuild"' in new_marker
 second, repairs its part and marks it again (app/worker.py,    or f'"by":"worker {stack.settings.worker_id}"'.encode() in new_marker
 second, repairs its part and marks it again (app/worker.py,), new_marker
 second, repairs its part and marks it again (app/worker.py,assert _page(stack, workload) == (status, page)
 second, repairs its part and marks it again (app/worker.py,with urllib.request.urlopen(f"{stack.api_url}/readyz", timeout=5) as r:
 second, repairs its part and marks it again (app/worker.py,    assert r.status == 200
