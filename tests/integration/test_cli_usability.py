"""The CLI as a new user meets it (issue 18, points 16-18): run as a
subprocess, against the real API, Redis and broker where it talks to them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from starlette.testclient import TestClient

from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from tests import waiting
from tests.integration.auth_world import SETTINGS, api_client, bearer, seed_world
from tests.integration.helpers import started_stack

pytestmark = pytest.mark.integration

MASTERY = str(Path(sys.executable).with_name("mastery"))
SECRET = (
    SETTINGS.jwt_hs256_secret.get_secret_value() if SETTINGS.jwt_hs256_secret else ""
)


def _mastery(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MASTERY_")}
    return subprocess.run(
        [MASTERY, *argv],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def client(redis_server: EmbeddedRedis) -> Iterator[TestClient]:
    seed_world(redis_server.url)
    with api_client(redis_server.url, None, "cli-usability") as c:
        yield c


def test_mastery_token_with_no_arguments_is_accepted_by_the_demo(
    client: TestClient,
) -> None:
    """What var/dev.env sets (the secret, the demo's partner) is all that
    `mastery token` needs for a token that reads the demo's rows."""
    done = _mastery(
        "token", MASTERY_JWT_HS256_SECRET=SECRET, MASTERY_TOKEN_PARTNER_ID="p1"
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["partner_id"] == "p1" and claims["roles"] == ["partner_admin"]
    r = client.post(
        "/learning-instances/li-a/metrics/status-and-progress",
        json={"goal_ids": ["goal-a"]},
        headers={"authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    # --no-role: a plain user, refused the class listing.
    plain = _mastery(
        "token",
        "--no-role",
        MASTERY_JWT_HS256_SECRET=SECRET,
        MASTERY_TOKEN_PARTNER_ID="p1",
    )
    assert plain.returncode == 0, plain.stderr
    assert jwt.decode(plain.stdout.strip(), SECRET, algorithms=["HS256"])["roles"] == []
    # The defaults are stated in --help.
    helptext = _mastery("token", "--help").stdout
    assert "default: partner_admin" in helptext
    assert "MASTERY_TOKEN_PARTNER_ID [partner-demo]" in helptext


def test_a_refused_token_s_403_names_the_role_or_claim_needed(
    client: TestClient,
) -> None:
    learner = bearer("la1", "p1")
    r = client.post(
        "/learning-instances/li-a/metrics/status-and-progress",
        json={"goal_ids": ["goal-a"]},
        headers=learner,
    )
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["details"]["required_roles"] == ["partner_admin"]
    assert "instructor" in error["details"]["or_claim"]
    assert "partner_admin" in error["message"] and "sub" in error["message"]
    r = client.post(
        "/registrations/reg-a2/metrics/status-and-progress",
        json={"goal_ids": ["goal-a"]},
        headers=learner,
    )
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["details"]["required_roles"] == ["partner_admin"]
    assert "user_id of the registration" in error["details"]["or_claim"]


def test_mastery_help_shows_no_raw_docstring() -> None:
    commands = [
        [],
        *[
            [c]
            for c in (
                "dev",
                "worker",
                "api",
                "produce",
                "token",
                "rebuild",
                "broker-reset",
                "dlq",
                "topics",
                "selfcheck",
                "model",
            )
        ],
        ["dlq", "list"],
        ["model", "fit"],
    ]
    for argv in commands:
        done = _mastery(*argv, "--help")
        assert done.returncode == 0, (argv, done.stderr)
        assert "``" not in done.stdout, (argv, done.stdout[:400])
    assert "mastery-stream" in _mastery("--help").stdout


class _Lines:
    """A child's merged output, read by a thread, waited on with deadlines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        out = proc.stdout
        self._thread = threading.Thread(
            target=lambda: self.lines.extend(iter(out.readline, "")), daemon=True
        )
        self._thread.start()

    def wait_for(self, text: str, timeout_s: float = 60.0) -> str:
        lines = waiting.wait_for(
            lambda: list(self.lines),
            accept=lambda lines: any(text in line for line in lines),
            timeout_s=timeout_s,
            interval_s=0.05,
            what=f"a line with {text!r}",
        )
        return next(line for line in lines if text in line)

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "".join(self.lines)


def test_mastery_api_says_where_it_listens_warns_about_redis_and_stops_on_ctrl_c() -> (
    None
):
    dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    base = {k: v for k, v in os.environ.items() if not k.startswith("MASTERY_")}
    base.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    proc = subprocess.Popen(
        [MASTERY, "api", "--port", "0"],
        env={**base, "REDIS_URL": dead, "MASTERY_JWT_HS256_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out = _Lines(proc)
    try:
        warning = out.wait_for("cannot reach Redis")
        assert "check REDIS_URL" in warning and "hunter2" not in warning
        line = out.wait_for("listening on http://")
        url = line.split("listening on ", 1)[1].split()[0]
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            assert response.status == 200
        # Ctrl-C in a terminal: SIGINT to the process group.
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text


def test_mastery_dlq_against_a_wrong_broker_is_one_line(
    kafka_server: EmbeddedKafka,
) -> None:
    """A refused login (SASL against a plaintext listener) and a port where
    no broker listens: the error line and nothing after it."""
    for env in [
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_server.bootstrap_servers,
            "MASTERY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "MASTERY_KAFKA_SASL_MECHANISM": "PLAIN",
            "MASTERY_KAFKA_SASL_USERNAME": "someone",
            "MASTERY_KAFKA_SASL_PASSWORD": "wrong",
        },
        {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"},
    ]:
        done = _mastery("dlq", "list", **env)
        assert done.returncode in (69, 78), done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert "Unclosed" not in done.stderr


def test_worker_logs_carry_no_terminal_escape_codes(
    kafka_server: EmbeddedKafka, tmp_path: Path
) -> None:
    with started_stack(kafka_server, tmp_path, "noesc", 1) as stack:
        log = stack.log_dir / "worker-1.log"
        # Faust's spinner wrote its code when start-up ended, before this line.
        waiting.wait_for(
            lambda: b"catalog caught up" in log.read_bytes(),
            timeout_s=120,
            interval_s=0.2,
            what=f"'catalog caught up' in {log}",
        )
        content = log.read_bytes()
    assert b"\x1b" not in content, content[content.find(b"\x1b") - 200 :][:400]
