"""No header or token content produces a 5xx; oversized heads and tokens are
refused early (issue 10, points 5 and 6; docs/auth.md, "Untrusted input").

The property test calls the real app (ASGI, raw header bytes as a server
would pass them) over the real Redis and broker; the head limit is checked
against a real ``mastery api`` process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from tests.integration.auth_world import SETTINGS, bearer, build_app, seed_world
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

SECRET = SETTINGS.jwt_hs256_secret.get_secret_value()  # type: ignore[union-attr]
PATHS = [
    "/learning-instances/li-a/metrics/status-and-progress",
    "/registrations/reg-a1/metrics/status-and-progress",
    "/learning-instances",
    "/registrations",
    "/batch-events",
    "/xapi/statements",
    "/caliper/events",
]


class Client:
    """Calls the ASGI app with raw header bytes, on one event loop (the
    app's Redis connections belong to it)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()

    def post(
        self, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"[]"
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return self.loop.run_until_complete(self._call(path, headers, body))

    async def _call(
        self, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        # Starlette re-raises an unhandled error after sending its 500.
        with contextlib.suppress(Exception):
            await self.app(scope, receive, send)
        start = sent[0]
        content = b"".join(m.get("body", b"") for m in sent[1:])
        return start["status"], start["headers"], content


@pytest.fixture(scope="module")
def client(
    redis_server: EmbeddedRedis, kafka_server: EmbeddedKafka
) -> Iterator[Client]:
    seed_world(redis_server.url)
    c = Client(build_app(redis_server.url, kafka_server.bootstrap_servers, "hdr"))
    yield c
    c.loop.close()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_claims = st.fixed_dictionaries(
    {},
    optional={
        "sub": _json | st.just("adm1"),
        "partner_id": _json | st.just("p1"),
        "exp": _json | st.just(int(time.time()) + 600),
        "roles": _json | st.just(["partner_admin"]),
        "aud": _json,
        "nbf": _json,
        "iat": _json,
    },
)
_header = st.fixed_dictionaries(
    {"alg": _json | st.sampled_from(["HS256", "RS256", "none", "€", "HS256\n"])},
    optional={"typ": _json, "kid": _json, "crit": _json},
)


@st.composite
def _crafted_token(draw: st.DrawFn) -> bytes:
    """Header and claims of any JSON shape, signed with the real key (so
    parsing goes past the signature) or not."""
    head = _b64(draw(st.binary(max_size=40)) if draw(st.booleans()) else b"")
    if not head:
        head = _b64(json.dumps(draw(_header)).encode())
    body = _b64(json.dumps(draw(_claims)).encode())
    signing_input = head + b"." + body
    if draw(st.booleans()):
        sig = hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest()
    else:
        sig = draw(st.binary(max_size=40))
    return b"Bearer " + signing_input + b"." + _b64(sig)


_authorization = (
    _crafted_token()
    | st.binary(max_size=200)
    | st.binary(max_size=60).map(lambda b: b"Bearer " + b)
    | st.text(max_size=60).map(lambda t: b"Bearer " + t.encode("utf-8"))
)
_other_headers = st.lists(
    st.tuples(
        st.sampled_from(
            [b"content-length", b"content-type", b"accept", b"x-junk", b"host"]
        ),
        st.binary(max_size=40),
    ),
    max_size=4,
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(PATHS),
    authorization=_authorization,
    others=_other_headers,
)
def test_no_header_or_token_content_produces_a_server_error(
    client: Client,
    path: str,
    authorization: bytes,
    others: list[tuple[bytes, bytes]],
) -> None:
    status, headers, body = client.post(
        path,
        [
            (b"authorization", authorization),
            *others,
            (b"content-type", b"application/json"),
        ],
    )
    assert status < 500, (status, body)
    if status == 401:
        challenge = dict(headers)[b"www-authenticate"]
        assert challenge.startswith(b'Bearer realm="mastery-stream"')
        assert all(0x20 <= c <= 0x7E for c in challenge), challenge


def test_a_non_ascii_algorithm_is_a_401_not_a_500(client: Client) -> None:
    """The issue's reproduction: ``{"alg":"€"}`` made the header unencodable."""
    token = _b64('{"alg":"€"}'.encode()) + b"." + _b64(b"{}") + b".sig"
    status, headers, body = client.post(
        PATHS[1], [(b"authorization", b"Bearer " + token)]
    )
    assert status == 401
    assert orjson.loads(body)["error"]["code"] == "unauthorized"
    assert (
        b"error_description=\"algorithm '?' is not accepted"
        in dict(headers)[b"www-authenticate"]
    )


def test_a_non_ascii_content_length_digit_is_not_a_500(client: Client) -> None:
    """``"²".isdigit()`` is true but ``int("²")`` fails."""
    auth = bearer("adm1", "p1", ("partner_admin",))["authorization"].encode()
    status, _, _ = client.post(
        PATHS[1],
        [
            (b"authorization", auth),
            (b"content-type", b"application/json"),
            (b"content-length", "²".encode("latin-1")),
        ],
        b'{"goal_ids": ["goal-a"]}',
    )
    assert status == 200


def test_an_oversized_token_is_refused_before_verification(client: Client) -> None:
    """A correctly signed token over MASTERY_MAX_TOKEN_BYTES is still a 401."""
    big = bearer("adm1", "p1", ("partner_admin",), ttl_s=600)
    token = big["authorization"].removeprefix("Bearer ")
    head, payload, _ = token.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["padding"] = "x" * SETTINGS.max_token_bytes
    body = _b64(orjson.dumps(claims))
    signing_input = head.encode() + b"." + body
    sig = _b64(hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest())
    status, _, content = client.post(
        PATHS[1],
        [(b"authorization", b"Bearer " + signing_input + b"." + sig)],
        b'{"goal_ids": ["goal-a"]}',
    )
    assert status == 401
    assert orjson.loads(content)["error"]["message"] == (
        f"token longer than {SETTINGS.max_token_bytes} bytes"
    )


MASTERY = str(Path(sys.executable).with_name("mastery"))


def _raw_request(port: int, head: bytes, *, chunk: int = 65_536) -> bytes:
    """Send ``head`` (without its final CRLF) and read the answer; stop
    sending as soon as the server answers or closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            for i in range(0, len(head), chunk):
                sock.sendall(head[i : i + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while data := sock.recv(65_536):
                answer += data
        except ConnectionResetError:
            pass
        return answer


@pytest.fixture(scope="module")
def api_process(redis_server: EmbeddedRedis) -> Iterator[int]:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "MASTERY_AUTH_MODE": "none",
        "MASTERY_API_MAX_HEADER_BYTES": "8192",
        "MASTERY_API_HEAD_TIMEOUT_S": "1.5",
        "MASTERY_API_KEEP_ALIVE_TIMEOUT_S": "1",
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    proc = subprocess.Popen(
        [MASTERY, "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def healthy() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            return False
        return True

    try:
        wait_for(healthy, timeout_s=30, interval_s=0.1, what="the API to start")
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_a_head_over_the_limit_is_answered_431(api_process: int) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 20_000 + b"\r\n"
    answer = _raw_request(api_process, head + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]


def test_a_huge_header_is_not_read_in_full(api_process: int) -> None:
    """50 MB of one header: the server answers and closes long before."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 50_000_000
    started = time.monotonic()
    answer = _raw_request(api_process, head)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert time.monotonic() - started < 5


def test_a_head_within_the_limit_is_served(api_process: int) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 6_000 + b"\r\n"
    answer = _raw_request(api_process, head + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
    assert answer.endswith(b'{"status":"ok"}')


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> bytes:
    """Read until the server closes, sending ``trickle`` a byte every 0.2 s;
    fail if the connection is still open after ``seconds``."""
    sock.setblocking(False)
    answer = b""
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        if sent < len(trickle):
            try:
                sock.send(trickle[sent : sent + 1])
                sent += 1
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                sent = len(trickle)  # closed by the server: read its answer
        try:
            data = sock.recv(65_536)
        except BlockingIOError:
            time.sleep(0.2)
            continue
        except ConnectionResetError:
            return answer
        if not data:
            return answer
        answer += data
    raise AssertionError(f"still open after {seconds} s (answer so far {answer!r})")


def test_a_head_sent_a_byte_at_a_time_is_cut_off(api_process: int) -> None:
    """Slowloris: the head is never completed; the server answers 408 and
    closes once MASTERY_API_HEAD_TIMEOUT_S (1.5 s here) has passed."""
    with socket.create_connection(("127.0.0.1", api_process), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = _closed_within(sock, 6.0, trickle=b"X-Slow: " + b"a" * 1000)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert 1.0 < time.monotonic() - started < 4.0


def test_a_connection_that_sends_nothing_is_closed(api_process: int) -> None:
    with socket.create_connection(("127.0.0.1", api_process), timeout=10) as sock:
        answer = _closed_within(sock, 6.0)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]


def test_an_idle_keep_alive_connection_is_closed(api_process: int) -> None:
    """After its response, a keep-alive connection may stay idle for
    MASTERY_API_KEEP_ALIVE_TIMEOUT_S (1 s here), not uvicorn's 5 s; a second
    request in time is served on it."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", api_process), timeout=10) as sock:
        for request_number in (1, 2):
            if request_number == 2:
                # Not a wait: idle for less than the keep-alive timeout is
                # what the second request must be served after.
                time.sleep(0.3)
            sock.sendall(request)
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                data = sock.recv(65_536)
                assert data, f"closed while answering: {answer!r}"
                answer += data
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
        started = time.monotonic()
        assert _closed_within(sock, 3.0) == b""
    assert time.monotonic() - started > 0.5
