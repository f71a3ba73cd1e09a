"""The worker's metrics and health port: counts match what was sent."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request

import orjson
import pytest

from app.devstack.embedded import free_port
from app.devstack.stack import DevStack
from app.devstack.workload import simulated
from infra.broker import profile_for
from infra.producer import EventProducer
from infra.settings import Settings
from infra.topic_names import TopicNames
from tests.integration.helpers import produce, wait_until_rows_match
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BAD = [b"{not json", b'{"type": "AttemptGraded"}', b"\xff\xfe"]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _sample(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name}{labels} not in the exposition"
    return float(found.group(1))


def _send_raw(stack: DevStack, values: list[bytes]) -> None:
    async def go() -> None:
        topics = TopicNames(stack.settings.topic_prefix)
        profile = profile_for(Settings(broker_profile="kafka"))
        async with EventProducer(
            stack.kafka.bootstrap_servers, profile, topics
        ) as producer:
            for i, value in enumerate(values):
                fut = await producer.send_raw(
                    topics.registration_events, f"bad-{i}".encode(), value
                )
                await fut

    asyncio.run(go())


def test_worker_metrics_count_what_was_sent(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=20, attempts_per_learner=30, seed=3
    )
    produce(stack, [*workload.catalog, *workload.registrations, *workload.attempts])
    _send_raw(stack, BAD)
    port = free_port()
    stack.start_worker("worker-1", extra_env={"MASTERY_METRICS_PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    wait_until_rows_match(
        stack, workload, [*workload.registrations, *workload.attempts], per_page=100
    )
    sent = len(workload.registrations) + len(workload.attempts)

    def metrics() -> tuple[int, str]:
        status, body = _get(f"{base}/metrics")
        return status, body.decode()

    status, text = wait_for(  # the bad records may trail the last row by a batch
        metrics,
        accept=lambda got: (
            got[0] == 200
            and _sample(got[1], "mastery_worker_events_total", '{outcome="rejected"}')
            == len(BAD)
        ),
        timeout_s=30,
        interval_s=0.5,
        what=f"/metrics counting the {len(BAD)} bad records as rejected",
    )
    assert status == 200
    assert _sample(text, "mastery_worker_events_total", '{outcome="applied"}') == sent
    assert _sample(text, "mastery_worker_events_total", '{outcome="rejected"}') == len(
        BAD
    )
    assert _sample(text, "mastery_worker_events_total", '{outcome="duplicate"}') == 0
    assert _sample(text, "mastery_worker_dead_letters_total") == len(BAD)
    # every decoded record's freshness was observed once, by both clocks
    observed = _sample(
        text, "mastery_worker_freshness_seconds_count", '{clock="occurred_at"}'
    )
    assert observed == sent
    assert _sample(
        text, "mastery_worker_freshness_seconds_count", '{clock="record"}'
    ) == sent + len(BAD)
    assert _sample(text, "mastery_worker_batch_events_sum") == sent + len(BAD)
    assert _sample(text, "mastery_worker_state_cache_entries") == len(
        workload.registrations
    )
    assert _sample(text, "mastery_worker_rebalances_total") >= 1
    assert _get(f"{base}/healthz") == (200, orjson.dumps({"status": "ok"}))
    assert _get(f"{base}/readyz")[0] == 200
    missing, body = _get(f"{base}/nope")
    assert missing == 404 and orjson.loads(body)["error"]["code"] == "not_found"
