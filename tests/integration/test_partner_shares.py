"""Each partner's share of the API's ingest and read pools (issue 18, point
5): with the broker (or Redis) stalled (SIGSTOP), requests hold their slot
until it answers; a partner over MASTERY_INGEST_MAX_INFLIGHT_PER_PARTNER (or
MASTERY_READ_MAX_INFLIGHT_PER_PARTNER) gets 429 scope=partner at once, and
another partner is not refused for it. The API process and real servers of
each test's own."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import as_completed as _as_completed
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis
from tests.integration.auth_world import SETTINGS, bearer, seed_world
from tests.integration.live_api import ApiProcess, api_process
from tests.waiting import holds_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARE = 2
ATTEMPT = {
    "module_id": "m-1",
    "is_correct": True,
    "interaction_end_time": "2026-09-01T08:00:03Z",
}


@pytest.fixture
def stalled_api(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[ApiProcess]:
    seed_world(redis_server.url)
    kafka = EmbeddedKafka().start()
    assert SETTINGS.jwt_hs256_secret is not None and kafka.proc is not None
    try:
        with api_process(
            redis_server.url,
            SETTINGS.jwt_hs256_secret.get_secret_value(),
            tmp_path,
            KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
            MASTERY_BROKER_PROFILE="kafka",
            MASTERY_TOPIC_PREFIX="shares",
            MASTERY_INGEST_MAX_INFLIGHT_PER_PARTNER=str(SHARE),
            MASTERY_INGEST_ACK_TIMEOUT_S="3",
        ) as api:
            kafka.proc.send_signal(signal.SIGSTOP)
            try:
                yield api
            finally:
                kafka.proc.send_signal(signal.SIGCONT)
    finally:
        kafka.stop()


def _post(api: ApiProcess, reg: str, headers: dict[str, str]) -> tuple[int, Any]:
    r = httpx.post(
        f"{api.url}/registrations/{reg}/graded-events",
        json=ATTEMPT,
        headers=headers,
        timeout=60,
    )
    return r.status_code, r.json()


def test_a_partner_over_its_ingest_share_leaves_other_partners_unaffected(
    stalled_api: ApiProcess,
) -> None:
    a = bearer("svc-a", "p1", ("ingest",))
    b = bearer("svc-b", "p2", ("ingest",))
    with ThreadPoolExecutor(SHARE + 2) as pool:
        from_a = [
            pool.submit(_post, stalled_api, "reg-a1", a) for _ in range(SHARE + 1)
        ]
        from_b = pool.submit(_post, stalled_api, "reg-x1", b)
        a_results = [f.result() for f in from_a]
        b_status, b_body = from_b.result()
    statuses = sorted(status for status, _ in a_results)
    # SHARE requests wait for the stalled broker and get its 503; the one over
    # the share is refused at once.
    assert statuses == [429] + [503] * SHARE, a_results
    refused = next(body for status, body in a_results if status == 429)
    assert refused["error"]["details"] == {"limit": SHARE, "scope": "partner"}
    # Partner B was not refused for A's share: it too waits for the broker.
    assert b_status == 503, b_body
    assert b_body["error"]["code"] == "broker_unavailable"


def _read(api: ApiProcess, li: str, goal: str, headers: dict[str, str]) -> int:
    r = httpx.post(
        f"{api.url}/learning-instances/{li}/metrics/status-and-progress",
        json={"goal_ids": [goal]},
        headers=headers,
        timeout=60,
    )
    return r.status_code


def test_a_partner_over_its_read_share_leaves_other_partners_unaffected(
    tmp_path: Path,
) -> None:
    """Redis paused (SIGSTOP): reads hold their slot (and a Redis connection)
    until it answers; a partner over MASTERY_READ_MAX_INFLIGHT_PER_PARTNER gets
    429 scope=partner at once, and another partner is not refused for it."""
    redis = EmbeddedRedis().start()
    assert SETTINGS.jwt_hs256_secret is not None and redis.proc is not None
    try:
        seed_world(redis.url)
        with api_process(
            redis.url,
            SETTINGS.jwt_hs256_secret.get_secret_value(),
            tmp_path,
            MASTERY_READ_MAX_INFLIGHT_PER_PARTNER=str(SHARE),
        ) as api:
            a = bearer("svc-a", "p1", ("partner_admin",))
            b = bearer("svc-b", "p2", ("partner_admin",))
            assert _read(api, "li-a", "goal-a", a) == 200  # the world is there
            redis.proc.send_signal(signal.SIGSTOP)
            with ThreadPoolExecutor(SHARE + 2) as pool:
                try:
                    from_a = [
                        pool.submit(_read, api, "li-a", "goal-a", a)
                        for _ in range(SHARE + 1)
                    ]
                    # The one over A's share is answered while Redis is paused.
                    done = next(f for f in _as_completed(from_a, timeout=10))
                    first = done.result()
                    from_b = pool.submit(_read, api, "li-x", "goal-x", b)
                    # No event marks "B's read is held, not refused": watch it
                    # for a window well under the API's Redis timeout (2 s).
                    holds_for(
                        lambda: not from_b.done(),
                        window_s=0.5,
                        interval_s=0.02,
                        what="B's read waiting while Redis is paused",
                    )
                finally:
                    # Within the API's Redis timeout (2 s): the held reads
                    # are answered once Redis runs again.
                    redis.proc.send_signal(signal.SIGCONT)
                a_statuses = sorted(f.result() for f in from_a)
                b_status = from_b.result()
    finally:
        redis.stop()
    assert first == 429
    assert a_statuses == [200] * SHARE + [429], a_statuses
    assert b_status == 200
