"""``mastery api --workers 2`` over a real Redis: one port, two processes,
metrics that add up, a crashed process replaced, a clean stop."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import pytest

from app.cli.api_processes import FAST_FAIL_S
from app.devstack.embedded import EmbeddedRedis
from tests.integration.auth_world import SETTINGS, bearer, seed_world
from tests.integration.live_api import api_process, children_of
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

LI_A = "/learning-instances/li-a/metrics/status-and-progress"
ADMIN = bearer("admin-1", "p1", ("partner_admin",))


def _requests_counted(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    pattern = (
        r'^mastery_api_requests_total\{[^}]*route="/learning-instances/\{li_id\}'
        r'/metrics/status-and-progress"[^}]*status="200"[^}]*\} ([0-9.e+]+)$'
    )
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def _age_s(pid: int) -> float:
    """How long ``pid`` has run, from /proc (its start in clock ticks since boot)."""
    start_ticks = int(
        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    )
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def test_two_processes_serve_one_port_and_add_up(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    seed_world(redis_server.url)
    assert SETTINGS.jwt_hs256_secret is not None
    secret = SETTINGS.jwt_hs256_secret.get_secret_value()
    with api_process(
        redis_server.url, secret, tmp_path, args=("--workers", "2")
    ) as api:
        children = children_of(api.proc.pid)
        assert len(children) == 2, children
        n = 40
        for _ in range(n):  # a new connection each: the kernel picks a process
            response = httpx.post(
                f"{api.url}{LI_A}", json={"goal_ids": ["goal-a"]}, headers=ADMIN
            )
            assert response.status_code == 200
        # Whichever process answers /metrics reports both processes' counts.
        assert {_requests_counted(api.url) for _ in range(6)} == {n}

        crashed = min(children)
        # A crash within FAST_FAIL_S of a child's start is a failed start (the
        # API gives up); this one must be a crash of a running process.
        wait_for(
            lambda: _age_s(crashed),
            accept=lambda age: age > FAST_FAIL_S + 0.5,
            timeout_s=FAST_FAIL_S + 10,
            what=f"API process {crashed} to run past FAST_FAIL_S (its age, s)",
        )
        os.kill(crashed, signal.SIGKILL)
        now = wait_for(
            lambda: children_of(api.proc.pid),
            accept=lambda now: len(now) == 2 and crashed not in now,
            timeout_s=20,
            interval_s=0.1,
            what=f"API process {crashed} replaced (the API's children)",
        )
        response = httpx.post(
            f"{api.url}{LI_A}", json={"goal_ids": ["goal-a"]}, headers=ADMIN
        )
        assert response.status_code == 200
        assert f"API process {crashed} ended (signal SIGKILL)" in api.log.read_text()

        api.proc.terminate()
        assert api.proc.wait(timeout=20) == 0
        for pid in now:  # ended and waited for (not orphaned, not zombies)
            assert not Path(f"/proc/{pid}").exists(), pid
        assert "2 processes" in api.log.read_text()
