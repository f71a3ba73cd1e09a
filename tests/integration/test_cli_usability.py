"""The CLI as a new user meets it (issue 18, points 16-18): run as a
subprocess, against the real API, Redis and broker where it talks to them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from starlette.testclient import TestClient

from app.embedded import EmbeddedRedis
from tests.integration.auth_world import SETTINGS, api_client, bearer, seed_world

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
